"""MODPO training speed: our loop (`methods.modpo.train_pairs`) against TRL's DPOTrainer with its
defaults, side by side, and against our SFT loop (what `budget.CostModel.dpo_pair_s` is scaled from).

Same model (SmolLM2-135M-Instruct, offline), same real HH pairs (helpful-base, prompt + longer
answer under --max-tokens tokens), same LoRA (r16 on every linear layer), same pairs per step.
DPO is MODPO with zero margin and w_k = 1, so TRL's DPOTrainer computes the same loss. The two
trainers alternate, `--repeats` times each, each run on a fresh model for `--steps` steps; a run's
seconds per step are the median interval between step ends after the first step (loading, data
preparation and the first, warm-up step left out of both). Printed: the machine, commit, date, each
run, the medians, and last the headline ratio with its target.

    python benchmarks/bench_modpo.py [--steps 6] [--pairs 4] [--repeats 3] [--model smollm2-135m-instruct]

`--model` takes any policy.model (a folder with a tiny random model checks the script end to end in seconds).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from paretohqd.config import SHARED_DIR, PolicyConfig, TrainConfig
from paretohqd.data.hh_rlhf import read_pairs
from paretohqd.data.transcript import to_messages
from paretohqd.methods.modpo import train_pairs
from paretohqd.policy.load import OFFLINE_SMOLLM2, load_tokenizer, resolve_policy
from paretohqd.policy.sft import encode, finetune, mixed_precision

HH = SHARED_DIR / "data" / "hh-rlhf" / "helpful-base.jsonl.gz"


def _pairs(tok, n: int, max_tokens: int) -> list[tuple[list[dict], str, str]]:
    """The first `n` helpful-base pairs on one prompt whose prompt + longer answer fit `max_tokens`."""
    out = []
    for pair in read_pairs([str(HH)]):
        if pair.prompt != pair.rejected_prompt or not pair.chosen or not pair.rejected or pair.chosen == pair.rejected:
            continue
        longest = max(len(tok(pair.prompt + " " + a)["input_ids"]) for a in (pair.chosen, pair.rejected))
        if longest <= max_tokens:
            out.append((to_messages(pair.prompt), pair.chosen, pair.rejected))
        if len(out) == n:
            return out
    return out


def _intervals(ends: list[float]) -> float:
    """Median seconds between step ends, the first step (warm-up) left out."""
    return statistics.median(np.diff(ends).tolist()) if len(ends) > 1 else float("nan")


def ours(pairs, tok, args, work: Path) -> float:
    encoded = [(encode(tok, m, c, 640), encode(tok, m, r, 640)) for m, c, r in pairs]
    ends: list[float] = []
    train_pairs(encoded, np.zeros(len(encoded)), work, policy=PolicyConfig(model=args.model), cfg=TrainConfig(),
                steps=args.steps, batch_size=args.pairs, lr=1e-4, beta=0.1, pair_weight=1.0, seed=0, pad_id=tok.pad_token_id,
                on_step=lambda *_: ends.append(time.perf_counter()))
    return _intervals(ends)


def sft(pairs, tok, args, work: Path) -> float:
    """Our SFT loop on the same answers, 2 x pairs samples a step (both answers of each pair)."""
    samples = [encode(tok, m, a, 640) for m, c, r in pairs for a in (c, r)]
    ends: list[float] = []
    cfg = TrainConfig(batch_size=2 * args.pairs)
    finetune(samples, work, policy=PolicyConfig(model=args.model), cfg=cfg, steps=args.steps, seed=0, pad_id=tok.pad_token_id,
             on_step=lambda *_: ends.append(time.perf_counter()))
    return _intervals(ends)


def trl(pairs, tok, args, work: Path) -> float:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from paretohqd.policy.sft import lora_config

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            ends.append(time.perf_counter())

    data = Dataset.from_list([{"prompt": m, "chosen": [{"role": "assistant", "content": c}],
                               "rejected": [{"role": "assistant", "content": r}]} for m, c, r in pairs])
    config = DPOConfig(output_dir=str(work), per_device_train_batch_size=args.pairs, max_steps=args.steps,
                       learning_rate=1e-4, beta=0.1, report_to="none", save_strategy="no", logging_steps=1,
                       disable_tqdm=True, use_cpu=not torch.cuda.is_available())  # the rest: TRL defaults
    model = AutoModelForCausalLM.from_pretrained(resolve_policy(args.model), dtype=torch.float32)
    trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tok,
                         peft_config=lora_config(TrainConfig()), callbacks=[Clock()])
    trainer.train()
    return _intervals(ends)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or "?"
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per run (the first is warm-up)")
    ap.add_argument("--pairs", type=int, default=4, help="pairs per step")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each trainer, alternated")
    ap.add_argument("--max-tokens", type=int, default=256, help="longest prompt + answer of a pair")
    ap.add_argument("--model", default=OFFLINE_SMOLLM2, help="the policy (policy.model)")
    args = ap.parse_args()
    tok = load_tokenizer(args.model)
    pairs = _pairs(tok, args.steps * args.pairs, args.max_tokens)  # every pair seen once a run
    print(f"{platform.node()} ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; commit {_commit()}; {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"{args.model}: {len(pairs)} HH pairs, {args.steps} steps x {args.pairs} pairs, LoRA r{TrainConfig().lora_r}, "
          f"ours in mixed precision {mixed_precision(TrainConfig())}, {args.repeats} alternated repeats")
    times: dict[str, list[float]] = {"ours": [], "trl": [], "sft": []}
    with tempfile.TemporaryDirectory(prefix="bench-modpo-") as tmp:
        for rep in range(args.repeats):
            for name, fn in (("ours", ours), ("trl", trl), ("sft", sft)):
                times[name].append(fn(pairs, tok, args, Path(tmp) / f"{name}-{rep}"))
                print(f"  repeat {rep + 1}: {name:4s} {times[name][-1]:.2f} s/step", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"median s/step: ours {med['ours']:.2f}, TRL DPOTrainer defaults {med['trl']:.2f}, "
          f"our SFT on the same {2 * args.pairs} answers {med['sft']:.2f}")
    print(f"a MODPO pair costs {med['ours'] / args.pairs / (med['sft'] / (2 * args.pairs)):.2f} SFT samples "
          f"(budget.CostModel.dpo_pair_s = that x sft_sample_s)")
    print(f"MODPO step, {args.pairs} pairs, {Path(args.model).name} LoRA: {med['trl'] / med['ours']:.2f}x TRL DPOTrainer defaults' "
          f"speed (target >= 1.0)")


if __name__ == "__main__":
    main()
