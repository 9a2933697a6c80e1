"""`paretohqd data prepare`: HH-RLHF transcripts to one deduplicated Parquet table of samples.

Both the chosen and the rejected response of each row become samples (as RiC's preparation,
which the paper follows, does): the reward models, not the HH labels, decide what is good.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from paretohqd.config import ConfigError, DataConfig
from paretohqd.data.hh_rlhf import read_pairs, to_messages
from paretohqd.io import write_parquet

COLUMNS = ["id", "prompt", "messages", "response", "source"]


def sample_id(prompt: str, response: str) -> str:
    """Stable id of a (prompt, response) pair: 16 hex digits of SHA-256.

    Examples:
        >>> sample_id("\\n\\nHuman: Hi", "Hello!")
        '32fe6de9b36673f4'
    """
    return hashlib.sha256(f"{prompt}\x00{response}".encode()).hexdigest()[:16]


def prompt_id(prompt: str) -> str:
    """Stable id of a prompt alone (for disjointness checks between splits)."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def prepare(cfg: DataConfig, tokenizer, out: str | Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """Read, split, filter and deduplicate; write `out` atomically.

    Args:
        cfg: the `data` section.
        tokenizer: the policy tokenizer; lengths are counted with it.
        out: Parquet path to write.

    Returns:
        The table written, and counts: rows read, samples seen, kept, and dropped by reason.
    """
    counts: Counter[str] = Counter()
    rows, seen = [], set()
    for pair in read_pairs(cfg.sources, cfg.hub_split):
        counts["rows read"] += 1
        for prompt, response in pair.samples():
            counts["samples seen"] += 1
            if not response:
                counts["dropped: empty response"] += 1
                continue
            sid = sample_id(prompt, response)
            if sid in seen:
                counts["dropped: duplicate"] += 1
                continue
            seen.add(sid)
            rows.append({"id": sid, "prompt": prompt, "response": response, "source": pair.source})
    if rows:
        _filter_lengths(rows, cfg, tokenizer, counts)
    df = pd.DataFrame([r for r in rows if r.get("keep", True)], columns=COLUMNS[:2] + COLUMNS[3:])
    df.insert(2, "messages", [to_messages(p) for p in df["prompt"]])
    counts["kept"] = len(df)
    write_parquet(df, out)
    return df, dict(counts)


def _filter_lengths(rows: list[dict], cfg: DataConfig, tokenizer, counts: Counter) -> None:
    # batch tokenisation: one fast-tokenizer call per column instead of one per sample
    n_prompt = [len(x) for x in tokenizer([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"]]
    n_resp = [len(x) for x in tokenizer([r["response"] for r in rows], add_special_tokens=False)["input_ids"]]
    for r, p, n in zip(rows, n_prompt, n_resp):
        if n < cfg.min_response_tokens:
            r["keep"] = False
            counts[f"dropped: response < {cfg.min_response_tokens} tokens"] += 1
        elif p + n > cfg.max_sample_tokens:
            r["keep"] = False
            counts[f"dropped: prompt+response > {cfg.max_sample_tokens} tokens"] += 1


def split_heldout(df: pd.DataFrame, n_prompts: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out `n_prompts` whole prompts (every sample of theirs) for evaluation.

    Returns (training samples, held-out prompts with columns prompt_id, prompt, messages).

    Raises:
        ConfigError: `evaluate.prompts` leaves no prompt to train on.
    """
    pids = df["prompt"].map(prompt_id)
    unique = np.sort(pids.unique())
    if n_prompts >= len(unique):
        raise ConfigError(f"evaluate.prompts ({n_prompts}) must be below the {len(unique)} distinct prompts "
                          "in the data, or nothing is left to train on")
    held = set(np.random.default_rng(seed).choice(unique, n_prompts, replace=False))
    mask = pids.isin(held)
    heldout = df[mask].assign(prompt_id=pids[mask]).drop_duplicates("prompt_id")
    return df[~mask].reset_index(drop=True), heldout[["prompt_id", "prompt", "messages"]].reset_index(drop=True)


def split_prompts(eval_df: pd.DataFrame, train_df: pd.DataFrame, n_prompts: int, seed: int) -> pd.DataFrame:
    """`n_prompts` distinct prompts of a separate evaluation split, none of them a training prompt.

    A prompt of the evaluation split that also occurs in training (same text hash) is dropped, so
    the disjointness check after evaluation holds by construction.

    Returns:
        Prompts with columns prompt_id, prompt, messages, in a seeded random order.

    Raises:
        ConfigError: fewer than `n_prompts` prompts are left.
    """
    train_ids = set(train_df["prompt"].map(prompt_id))
    pids = eval_df["prompt"].map(prompt_id)
    df = eval_df.assign(prompt_id=pids)[~pids.isin(train_ids)].drop_duplicates("prompt_id")
    if len(df) < n_prompts:
        raise ConfigError(f"evaluate.prompts ({n_prompts}) is more than the {len(df)} distinct prompts of "
                          "evaluate.sources that are not training prompts; lower evaluate.prompts")
    return df.sample(n=n_prompts, random_state=seed)[["prompt_id", "prompt", "messages"]].reset_index(drop=True)
