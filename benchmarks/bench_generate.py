"""Generation speed: our `hf` path (`policy/generate.py` and `decode.py`: the LoRA merged into the
weights, prompts batched by length, each prompt encoded without padding after the prefix the batch
shares, a KV cache written in place, ended rows leaving the batch) against `model.generate` on the
PEFT-wrapped model (a `PeftModel` with the same LoRA adapter, transformers' default generate
settings, prompts batched in input order), side by side.

Same model (SmolLM2-135M-Instruct, offline), same adapter (r16 on every linear layer, random
nonzero B so it changes the answers), same HH prompts of mixed lengths, same batch size, same
max_new_tokens, greedy for both. The two are timed alternately, `--repeats` times, and the median
of each is compared; tokens/s counts each side's own new tokens (EOS and padding not counted).
The default batch of 32 is `generate.batch_size` of configs/demo.yaml and compare-cpu.yaml (the
paper configs use 64). `--ablate` also times the merge alone (`model.generate` on the merged model,
and with transformers' static KV cache). torch.compile is not among them: with torch 2.13 on CPU,
inductor failed to compile the decoding step (BackendCompilerFailed).
Usage: python benchmarks/bench_generate.py [--prompts 32] [--max-new-tokens 64] [--batch-size 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from paretohqd.config import SHARED_DIR, GenerateConfig, PolicyConfig, TrainConfig
from paretohqd.data.hh_rlhf import read_pairs
from paretohqd.data.transcript import to_messages
from paretohqd.devices import native_bf16
from paretohqd.policy.generate import generate, load_for_generation
from paretohqd.policy.load import OFFLINE_SMOLLM2, load_policy, load_tokenizer
from paretohqd.policy.prompts import prompt_text


def _machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    return (f"{cpu}, {torch.get_num_threads()} torch threads, {'/'.join(isa) or 'no AVX-512'}, "
            f"native bf16 {native_bf16('cpu')}; torch {torch.__version__}; commit {commit}; "
            f"{dt.datetime.now().isoformat(timespec='seconds')}")


def _prompts(n: int) -> list[list[dict]]:
    """n HH prompts of mixed lengths: spread evenly over the length ranks of the first 8n short ones."""
    pool = []
    for pair in read_pairs([str(SHARED_DIR / "data" / "hh-rlhf" / "helpful-base.jsonl.gz")]):
        prompt = pair.samples()[0][0]
        if len(prompt) <= 1200:
            pool.append(to_messages(prompt))
        if len(pool) == 8 * n:
            break
    ranked = sorted(pool, key=lambda c: len(str(c)))
    picked = [ranked[i * len(ranked) // n] for i in range(n)]
    return [picked[i] for i in torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()]


def _adapter(folder: Path) -> None:
    """A LoRA adapter as training writes it (the run's defaults), with random nonzero B."""
    from peft import LoraConfig, get_peft_model

    cfg = TrainConfig()
    torch.manual_seed(0)
    model = get_peft_model(load_policy(OFFLINE_SMOLLM2), LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.01)
    model.save_pretrained(folder)


def _plain(model, tok, conversations, batch_size: int, max_new_tokens: int, **extra) -> tuple[int, float]:
    """`model.generate` with default settings, batched in input order: (new tokens, seconds)."""
    tok.padding_side = "left"
    n, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(conversations), batch_size):
            texts = [prompt_text(tok, c, "chat") for c in conversations[start:start + batch_size]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, **extra)[:, enc["input_ids"].shape[1]:]  # (B, new)
            n += int((ids != tok.pad_token_id).sum())
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ablate", action="store_true", help="also time the merge alone, with and without a static KV cache")
    args = ap.parse_args()
    print(_machine())
    tok = load_tokenizer(OFFLINE_SMOLLM2)
    conversations = _prompts(args.prompts)
    lengths = [len(tok(prompt_text(tok, c, "chat"), add_special_tokens=False)["input_ids"]) for c in conversations]
    print(f"{len(conversations)} HH prompts of {min(lengths)}-{max(lengths)} tokens (median {statistics.median(lengths):.0f}), "
          f"batch {args.batch_size}, max_new_tokens {args.max_new_tokens}, greedy, {args.repeats} alternating repeats")
    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    _adapter(work / "adapter")

    from peft import PeftModel

    peft = PeftModel.from_pretrained(load_policy(OFFLINE_SMOLLM2), str(work / "adapter")).eval()
    ours = load_for_generation(PolicyConfig(), work / "adapter")
    cfg = GenerateConfig(max_new_tokens=args.max_new_tokens, temperature=0, batch_size=args.batch_size)

    def run_ours() -> tuple[int, float]:
        _, stats = generate(ours, tok, conversations, cfg, seed=0, progress=False)
        return stats["new_tokens"], stats["seconds"]

    sides = {"PEFT model.generate": lambda: _plain(peft, tok, conversations, args.batch_size, args.max_new_tokens),
             "ours (hf)": run_ours}
    if args.ablate:
        sides["merged, model.generate"] = lambda: _plain(ours, tok, conversations, args.batch_size, args.max_new_tokens)
        sides["merged, model.generate, static KV cache"] = lambda: _plain(
            ours, tok, conversations, args.batch_size, args.max_new_tokens, cache_implementation="static")
    for model in (peft, ours):  # warm-up: not timed
        _plain(model, tok, conversations[:2], 2, 2)
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.repeats):
        for name, side in sides.items():
            n, seconds = side()
            rates[name].append(n / seconds)
            print(f"  repeat {r + 1} {name}: {n} tokens in {seconds:.1f} s = {n / seconds:.1f} tokens/s", flush=True)
    median = {name: statistics.median(v) for name, v in rates.items()}
    base = median["PEFT model.generate"]
    for name, rate in median.items():
        print(f"{name}: median {rate:.1f} new tokens/s ({rate / base:.2f}x)")
    shutil.rmtree(work, ignore_errors=True)
    print(f"generate {len(conversations)} HH prompts x {args.max_new_tokens} tokens, SmolLM2 LoRA: "
          f"{median['ours (hf)'] / base:.2f}x PEFT model.generate's tokens/s (target >= 2x)")


if __name__ == "__main__":
    main()
