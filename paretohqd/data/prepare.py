"""`paretohqd data prepare`: the data sources to one deduplicated Parquet table of samples.

Both the chosen and the rejected response of each HH row become samples (as RiC's preparation,
which the paper follows, does): the reward models, not the HH labels, decide what is good. Other
formats (`paretohqd.data.sources`) give their own samples and keep their label columns, which
follow the standard columns in the table.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from paretohqd.config import ConfigError, DataConfig
from paretohqd.data.sources import read_rows
from paretohqd.data.transcript import to_messages
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
        The table written (the standard columns, then any label columns), and counts: rows read,
        samples seen, kept, dropped by reason, and kept samples missing a label, per label.
    """
    counts: Counter[str] = Counter()
    rows, seen = [], set()
    for samples in read_rows(cfg.sources, cfg.hub_split):
        counts["rows read"] += 1
        for s in samples:
            counts["samples seen"] += 1
            if not s.response:
                counts["dropped: empty response"] += 1
                continue
            sid = sample_id(s.prompt, s.response)
            if sid in seen:
                counts["dropped: duplicate"] += 1
                continue
            seen.add(sid)
            rows.append(s)
    keep = _length_mask(rows, cfg, tokenizer, counts) if rows else np.zeros(0, dtype=bool)  # (n_rows,)
    kept = [s for s, k in zip(rows, keep) if k]
    df = pd.DataFrame({"id": [sample_id(s.prompt, s.response) for s in kept], "prompt": [s.prompt for s in kept],
                       "messages": [s.messages or to_messages(s.prompt) for s in kept],
                       "response": [s.response for s in kept], "source": [s.source for s in kept]}, columns=COLUMNS)
    labels = label_frame([s.labels for s in kept])
    for name in labels.columns:
        df[name] = labels[name].to_numpy()
        if (n := int(labels[name].isna().sum())):
            counts[f"kept without label '{name}'"] = n
    counts["kept"] = len(df)
    write_parquet(df, out)
    return df, dict(counts)


def label_frame(labels: list[dict]) -> pd.DataFrame:
    """Label dicts as columns (first-seen order), each one Parquet type: numbers mixed with flags
    become floats, text mixed with anything becomes text; a missing label is null.

    Examples:
        >>> label_frame([{"a": 1, "b": "x"}, {"a": 2.5, "b": 3}]).to_dict("list")
        {'a': [1.0, 2.5], 'b': ['x', '3']}
    """
    names = list(dict.fromkeys(k for d in labels for k in d))
    columns = {}
    for name in names:
        values = [d.get(name) for d in labels]
        kinds = {type(v) for v in values if v is not None}
        if str in kinds and len(kinds) > 1:
            values = [None if v is None else str(v) for v in values]
        elif len(kinds) > 1:  # bool / int / float: one number type
            values = [None if v is None else float(v) for v in values]
        columns[name] = pd.Series(values, dtype=object if str in kinds or bool in kinds else None)
    return pd.DataFrame(columns)


def _length_mask(rows: list, cfg: DataConfig, tokenizer, counts: Counter) -> np.ndarray:
    """(n_rows,) True for samples inside the token window; counts the others by reason."""
    # batch tokenisation: one fast-tokenizer call per column instead of one per sample
    n_prompt = [len(x) for x in tokenizer([s.prompt for s in rows], add_special_tokens=False)["input_ids"]]
    n_resp = [len(x) for x in tokenizer([s.response for s in rows], add_special_tokens=False)["input_ids"]]
    keep = np.ones(len(rows), dtype=bool)
    for i, (p, n) in enumerate(zip(n_prompt, n_resp)):
        if n < cfg.min_response_tokens:
            keep[i] = False
            counts[f"dropped: response < {cfg.min_response_tokens} tokens"] += 1
        elif p + n > cfg.max_sample_tokens:
            keep[i] = False
            counts[f"dropped: prompt+response > {cfg.max_sample_tokens} tokens"] += 1
    return keep


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
