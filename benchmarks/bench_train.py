"""Stage-1 training speed: our loop against TRL's SFTTrainer with its defaults, side by side.

Same model (SmolLM2-135M-Instruct, offline), same 64 real HH samples, same LoRA (r16 on every
linear layer), batch 8, same learning rate, completion-only loss in both. Also prints generation
speed. Usage: python benchmarks/bench_train.py [--steps 4]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from paretohqd.config import DataConfig, GenerateConfig, PolicyConfig, TrainConfig
from paretohqd.data.prepare import prepare
from paretohqd.policy.load import OFFLINE_SMOLLM2, load_tokenizer, resolve_policy
from paretohqd.policy.generate import generate, load_for_generation
from paretohqd.policy.sft import encode, finetune


def _trl(df: pd.DataFrame, steps: int, cfg: TrainConfig, workdir: Path) -> float:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"prompt": list(m), "completion": [{"role": "assistant", "content": r}]}
                              for m, r in zip(df["messages"], df["response"])])
    args = SFTConfig(output_dir=str(workdir), per_device_train_batch_size=cfg.batch_size, max_steps=steps,
                     learning_rate=cfg.lr, report_to="none", save_strategy="no", logging_steps=1,
                     disable_tqdm=True, use_cpu=not torch.cuda.is_available())  # the rest: TRL defaults
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(resolve_policy(OFFLINE_SMOLLM2), dtype=torch.float32)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, peft_config=lora,
                         processing_class=load_tokenizer(OFFLINE_SMOLLM2))
    t0 = time.perf_counter()
    trainer.train()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    tok = load_tokenizer(OFFLINE_SMOLLM2)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    df, _ = prepare(DataConfig(), tok, work / "hh.parquet")
    df = df.sample(8 * args.steps, random_state=0)  # every sample seen once by both trainers
    samples = [encode(tok, list(m), r, 640) for m, r in zip(df["messages"], df["response"])]
    n_tokens = sum(len(ids) for ids, _ in samples)
    cfg = TrainConfig()
    print(f"{len(samples)} HH samples, {n_tokens:,} tokens, {args.steps} steps x batch {cfg.batch_size}, "
          f"LoRA r{cfg.lora_r}, torch threads {torch.get_num_threads()}")

    t0 = time.perf_counter()
    stats = finetune(samples, work / "ours", policy=PolicyConfig(), cfg=cfg, steps=args.steps, seed=0,
                  pad_id=tok.pad_token_id)
    ours = time.perf_counter() - t0
    print(f"ours: {ours:.1f} s ({ours / args.steps:.1f} s/step, {n_tokens / ours:.0f} tokens/s, "
          f"mixed precision {stats['mixed_precision']})")
    trl = _trl(df, args.steps, cfg, work / "trl")
    print(f"TRL SFTTrainer defaults: {trl:.1f} s ({trl / args.steps:.1f} s/step, {n_tokens / trl:.0f} tokens/s)")

    model = load_for_generation(PolicyConfig(), None)
    gen_cfg = GenerateConfig(max_new_tokens=64)
    _, g = generate(model, tok, [list(m) for m in df["messages"][:16]], gen_cfg, seed=0, label="generate")
    print(f"generation: {g['tokens_per_s']:.1f} new tokens/s (16 prompts, batch {gen_cfg.batch_size}, "
          f"max_new_tokens {gen_cfg.max_new_tokens})")
    shutil.rmtree(work, ignore_errors=True)
    print(f"train {args.steps}x8 SmolLM2 LoRA: {trl / ours:.2f}x TRL defaults' speed (target >= 3x)")


if __name__ == "__main__":
    main()
