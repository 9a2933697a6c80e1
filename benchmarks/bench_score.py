"""Scoring engine vs a plain loop, side by side, on the same HH samples and the same models.

- engine: `score_frame` (token-length-sorted batches, one MiniLM pass shared by every head,
  duplicate prompts embedded once), with an empty cache so nothing is skipped;
- plain loop: rows in file order, fixed batches, each model on its own (each head embeds again).

Models: a transformers classifier (MiniLM's BERT with a fresh classification head, pair input) and
three MiniLM reward heads (random weights: speed does not depend on them). Offline, CPU.

    python benchmarks/bench_score.py [--n 400] [--batch-size 32]
"""

from __future__ import annotations

import os
import argparse
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import torch

from paretohqd.config import DataConfig, RewardsConfig
from paretohqd.data.hh_rlhf import read_pairs
from paretohqd.data.prepare import sample_id
from paretohqd.data.transcript import last_turn
from paretohqd.rewards.hf import HFRewardModel
from paretohqd.rewards.minilm import Encoder, HeadRewardModel, RewardHead, encoder_path, feature_dim
from paretohqd.rewards.score import score_frame


def hh_samples(n: int, seed: int) -> pd.DataFrame:
    """n (prompt, response) samples, chosen and rejected alike, in file order after a seeded pick."""
    rows = [(p, r) for pair in read_pairs(DataConfig().sources) for p, r in pair.samples() if r]
    pick = np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))
    # keep both answers of a pair where both were picked (as in the prepared table)
    return pd.DataFrame([{"id": sample_id(*rows[i]), "prompt": rows[i][0], "response": rows[i][1]} for i in pick])


def plain_hf(m: HFRewardModel, df: pd.DataFrame, bs: int) -> np.ndarray:
    out = []
    for s in range(0, len(df), bs):
        b = df.iloc[s : s + bs]
        first, second = m.inputs(b["prompt"].tolist(), b["response"].tolist())
        enc = m.tokenizer(first, second, truncation=True, max_length=m.max_length, padding=True, return_tensors="pt")
        with torch.inference_mode():
            out.append(m.model(**enc).logits[:, m.logit].double().numpy())
    return np.concatenate(out)


def plain_head(m: HeadRewardModel, df: pd.DataFrame, bs: int) -> np.ndarray:
    out = []
    for s in range(0, len(df), bs):
        b = df.iloc[s : s + bs]
        # one batch of prompts and one of responses per step: the embed call sorts only within it
        p = m.encoder.embed([last_turn(x) for x in b["prompt"]], batch_size=bs) if m.inputs == "pair" else None
        out.append(m.score_embeddings(p, m.encoder.embed(b["response"].tolist(), batch_size=bs)))
    return np.concatenate(out)


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400, help="HH samples")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    df = hh_samples(args.n, 0)
    cfg = RewardsConfig(max_length=args.max_length)
    torch.manual_seed(0)  # the classifier head is fresh: seed it so runs compare
    classifier = HFRewardModel(str(encoder_path()), cfg, format="pair", logit=0, name="minilm-bert-classifier")
    encoder = Encoder(max_length=args.max_length)
    torch.manual_seed(0)
    heads = {o: HeadRewardModel(f"minilm-{o}", RewardHead(feature_dim(i), 128), {"inputs": i}, encoder)
             for o, i in [("helpful", "pair"), ("harmless", "pair"), ("humor", "response")]}
    print(f"{len(df)} HH samples, batch size {args.batch_size}, {args.threads} threads, max_length {args.max_length}")
    print(f"{'models':<28}{'plain pairs/s':>14}{'engine pairs/s':>16}{'ratio':>8}{'max |diff|':>12}")
    total_plain = total_engine = 0.0
    cases = [("transformers classifier", {"cls": classifier}, lambda: {"cls": plain_hf(classifier, df, args.batch_size)}),
             ("3 MiniLM heads", heads, lambda: {o: plain_head(h, df, args.batch_size) for o, h in heads.items()})]
    for label, models, plain in cases:
        ref, t_plain = timed(plain)
        with tempfile.TemporaryDirectory() as cache:
            out, t_engine = timed(lambda: score_frame(df, models, cache_dir=cache, batch_size=args.batch_size, progress=False))
            _, t_rerun = timed(lambda: score_frame(df, models, cache_dir=cache, batch_size=args.batch_size, progress=False))
        diff = max(float(np.abs(out[o].to_numpy() - ref[o]).max()) for o in models)
        total_plain, total_engine = total_plain + t_plain, total_engine + t_engine
        print(f"{label:<28}{len(df) / t_plain:>14.1f}{len(df) / t_engine:>16.1f}{t_plain / t_engine:>7.2f}x{diff:>12.1e}"
              f"   (cached rerun {t_rerun:.2f}s)")
    ratio = total_plain / total_engine
    print(f"HEADLINE: engine {len(df) / total_engine:.1f} vs plain loop {len(df) / total_plain:.1f} pairs/s "
          f"(each pair scored by all 4 models) on HH data: {ratio:.2f}x (target >= 2x) {'PASS' if ratio >= 2 else 'FAIL'}")


if __name__ == "__main__":
    main()
