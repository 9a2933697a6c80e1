"""Is bfloat16 a speed-up on this CPU? Sampling and a training step of SmolLM2-135M-Instruct
(offline) in float32 against bfloat16, side by side, and what `devices.native_bf16` decides.

bf16 is fast only where the CPU has AVX512-BF16 or AMX; elsewhere oneDNN emulates it. The `auto`
settings (generate.dtype, train.mixed_precision, rewards.dtype) follow `native_bf16`, so its
answer must agree with the measured ratio. Usage: python benchmarks/bench_bf16.py [--tokens 32]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from paretohqd.devices import native_bf16
from paretohqd.policy.load import OFFLINE_SMOLLM2, resolve_policy


def sampling(path: str, enc: dict, dtype: torch.dtype, tokens: int, pad: int) -> float:
    """Greedy decoding steps per second for the batch `enc`, weights in `dtype`."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    with torch.inference_mode():
        model.generate(**enc, max_new_tokens=2, do_sample=False, pad_token_id=pad)  # warm-up
        t = time.perf_counter()
        model.generate(**enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=pad)
        return tokens / (time.perf_counter() - t)


def training(path: str, enc: dict, autocast: bool, steps: int = 3) -> float:
    """Seconds per forward+backward step, fp32 weights, with or without bf16 autocast."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).train()
    seconds = []
    for _ in range(steps + 1):  # the first is a warm-up
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(**enc, labels=enc["input_ids"]).loss
        loss.backward()
        model.zero_grad()
        seconds.append(time.perf_counter() - t)
    return sum(seconds[1:]) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=24)
    args = ap.parse_args()
    path = resolve_policy(OFFLINE_SMOLLM2)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    texts = [tok.apply_chat_template([{"role": "user", "content": f"Tell me about topic {i} in some detail."}],
                                     tokenize=False, add_generation_prompt=True) for i in range(args.batch)]
    enc = dict(tok(texts, return_tensors="pt", padding=True, add_special_tokens=False))
    train_enc = dict(tok(["Human: What is a llama? Assistant: " + "A llama is a domesticated camelid. " * 12] * 4,
                         return_tensors="pt"))
    flags = {n: getattr(torch.cpu, n)() for n in ("_is_avx512_supported", "_is_avx512_bf16_supported",
                                                   "_is_amx_tile_supported") if hasattr(torch.cpu, n)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU flags {flags}")
    print(f"oneDNN says bf16 supported: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}; "
          f"native_bf16('cpu') = {native_bf16('cpu')}")
    fp32 = sampling(path, enc, torch.float32, args.tokens, tok.pad_token_id)
    bf16 = sampling(path, enc, torch.bfloat16, args.tokens, tok.pad_token_id)
    print(f"sampling, batch {args.batch}: float32 {fp32:.2f} steps/s, bfloat16 {bf16:.2f} steps/s")
    no, yes = training(path, train_enc, False), training(path, train_enc, True)
    print(f"training step, batch 4 x {train_enc['input_ids'].shape[1]} tokens: float32 {no:.2f} s, bf16 autocast {yes:.2f} s")
    print(f"bf16 / fp32 speed: training {no / yes:.2f}x, sampling {bf16 / fp32:.2f}x "
          f"(native_bf16 = {native_bf16('cpu')}: it must be True only where both are > 1)")


if __name__ == "__main__":
    main()
