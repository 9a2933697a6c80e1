"""`paretohqd reward train`: the offline reward heads, from real preference data.

- helpful / harmless: Bradley-Terry on HH-RLHF helpful-base / harmless-base (chosen vs rejected);
- humor: a classifier, r/Jokes jokes (positives) against HH responses (negatives); score = logit.

Each head is trained on frozen MiniLM embeddings (cached by text in `<rewards.dir>/embeddings/`), with a seeded
held-out split whose accuracy (and AUC for humor) is printed and saved in the head's config.json.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from paretohqd.config import DataConfig, RewardsConfig
from paretohqd.data.transcript import last_turn
from paretohqd.io import InputError, write_json
from paretohqd.lock import hold
from paretohqd.progress import console
from paretohqd.rewards.base import OFFLINE, head_marker  # not the package: it loads rewards.labels, which imports this
from paretohqd.rewards.minilm import ENCODER, Encoder, RewardHead, bt_loss, features, save_head

OBJECTIVES = {"minilm-helpful": "helpful", "minilm-harmless": "harmless", "minilm-humor": "humor"}
_MINIBATCH = 256  # pairs per step: the heads are small, embeddings fixed, so this is cheap and stable


# Data


def read_jokes(path: str | Path) -> list[str]:
    """Joke texts from an r/Jokes `score<TAB>joke` file (.tsv or .tsv.gz)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such jokes file (rewards.jokes)")
    opener = gzip.open if path.suffix == ".gz" else open
    jokes = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            score, sep, joke = line.rstrip("\n").partition("\t")
            if not sep or not joke.strip():
                raise InputError(f"{path}:{lineno}: expected `score<TAB>joke`")
            jokes.append(joke.strip())
    return jokes


def _hh(sources: Sequence[str], subset: str) -> list:
    from paretohqd.data.hh_rlhf import read_pairs

    pairs = [p for p in read_pairs(list(sources)) if p.source == subset]
    if not pairs:
        raise InputError(f"no {subset} pairs in data.sources {list(sources)}; the helpful/harmless heads need HH-RLHF {subset}")
    return pairs


# Training


def split(n: int, held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) index arrays; at least one item on each side.

    Examples:
        >>> [len(x) for x in split(10, 0.2, 0)]
        [8, 2]
    """
    perm = np.random.default_rng(seed).permutation(n)
    k = min(max(1, round(n * held_out)), n - 1)
    return np.sort(perm[k:]), np.sort(perm[:k])


def fit(head: RewardHead, loss_fn: Callable[[torch.Tensor], torch.Tensor], n: int, cfg: RewardsConfig) -> list[float]:
    """Minibatch AdamW over `n` items for `cfg.epochs`; `loss_fn(index tensor)` gives a batch loss.
    Returns the mean loss per epoch. Deterministic given `cfg.seed`."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    head.train()
    history = []
    for _ in range(cfg.epochs):
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(_MINIBATCH):
            loss = loss_fn(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / n)
    return history


def train_bt(chosen: torch.Tensor, rejected: torch.Tensor, cfg: RewardsConfig) -> tuple[RewardHead, dict]:
    """Bradley-Terry head on (n_pairs, d) chosen / rejected features; held-out pairwise accuracy."""
    torch.manual_seed(cfg.seed)
    head = RewardHead(chosen.shape[1], cfg.hidden)
    tr, ho = split(len(chosen), cfg.held_out, cfg.seed)
    c_tr, r_tr = chosen[tr], rejected[tr]
    history = fit(head, lambda i: bt_loss(head(c_tr[i]), head(r_tr[i])), len(tr), cfg)
    head.eval()
    with torch.inference_mode():
        margin = head(chosen) - head(rejected)  # (n_pairs,)
    return head, {"held_out_accuracy": float((margin[ho] > 0).float().mean()),
                  "train_accuracy": float((margin[tr] > 0).float().mean()),
                  "held_out_pairs": len(ho), "train_pairs": len(tr), "final_train_loss": history[-1]}


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half.

    Examples:
        >>> auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
        0.75
    """
    import pandas as pd

    ranks = pd.Series(scores).rank(method="average").to_numpy()  # ties share their mean rank
    n_pos, n_neg = int(labels.sum()), int((1 - labels).sum())
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_classifier(x: torch.Tensor, y: torch.Tensor, cfg: RewardsConfig) -> tuple[RewardHead, dict]:
    """Logistic head on (n, d) features and 0/1 labels; held-out AUC and accuracy at logit 0."""
    torch.manual_seed(cfg.seed)
    head = RewardHead(x.shape[1], cfg.hidden)
    tr, ho = split(len(x), cfg.held_out, cfg.seed)
    x_tr, y_tr = x[tr], y[tr].float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    history = fit(head, lambda i: bce(head(x_tr[i]), y_tr[i]), len(tr), cfg)
    head.eval()
    with torch.inference_mode():
        logit = head(x).numpy()  # (n,)
    labels = y.numpy()
    return head, {"held_out_auc": auc(logit[ho], labels[ho]), "held_out_accuracy": float(((logit[ho] > 0) == labels[ho]).mean()),
                  "held_out_examples": len(ho), "train_examples": len(tr), "final_train_loss": history[-1]}


# Heads


def _pair_features(pairs: list, embed: Callable[[list[str]], np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_pairs, 1152) chosen and rejected features; the two prompts differ in a few HH rows."""
    n = len(pairs)
    texts = [last_turn(p.prompt) for p in pairs] + [last_turn(p.rejected_prompt) for p in pairs]
    emb = embed(texts + [p.chosen for p in pairs] + [p.rejected for p in pairs])  # (4n, 384)
    return features(emb[:n], emb[2 * n : 3 * n], "pair"), features(emb[n : 2 * n], emb[3 * n :], "pair")


def _humor_data(cfg: RewardsConfig, sources: Sequence[str], embed) -> tuple[torch.Tensor, torch.Tensor]:
    """Response features and labels: sampled jokes (1) and sampled HH responses (0)."""
    from paretohqd.data.hh_rlhf import read_pairs

    rng = np.random.default_rng(cfg.seed)
    jokes = read_jokes(cfg.jokes)
    responses = sorted({r for p in read_pairs(list(sources)) for _, r in p.samples() if r})
    pos = [jokes[i] for i in rng.choice(len(jokes), min(cfg.humor_positives, len(jokes)), replace=False)]
    neg = [responses[i] for i in rng.choice(len(responses), min(cfg.humor_negatives, len(responses)), replace=False)]
    x = features(None, embed(pos + neg), "response")  # (n, 384)
    return x, torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))])


def train_head(name: str, cfg: RewardsConfig, sources: Sequence[str], encoder: Encoder) -> dict:
    """Train one offline head, save it to `<cfg.dir>/<name>/`; return its metrics."""
    embed = encoder.embed
    t0 = time.perf_counter()
    if name == "minilm-humor":
        inputs, data = "response", "rjokes vs HH responses"
        head, metrics = train_classifier(*_humor_data(cfg, sources, embed), cfg)
    else:
        inputs, subset = "pair", f"{OBJECTIVES[name]}-base"
        data = f"HH-RLHF {subset}"
        head, metrics = train_bt(*_pair_features(_hh(sources, subset), embed), cfg)
    metrics["train_seconds"] = round(time.perf_counter() - t0, 1)
    train_keys = ("seed", "held_out", "epochs", "lr", "weight_decay", "hidden", "humor_positives", "humor_negatives", "dtype", "max_length")
    meta = {"objective": OBJECTIVES[name], "inputs": inputs, "hidden": cfg.hidden, "encoder": ENCODER,
            "encoder_fingerprint": encoder.fingerprint, "data": data, "metrics": metrics,
            "train_config": {k: getattr(cfg, k) for k in train_keys}}
    save_head(head, meta, Path(cfg.dir) / name)
    return metrics


def _check_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in OFFLINE]
    if unknown:
        raise InputError(f"cannot train {unknown}: offline heads are {list(OFFLINE)} (--only takes helpful, harmless, humor)")


def train_heads(cfg: RewardsConfig, names: Sequence[str] = OFFLINE, *, sources: Sequence[str] | None = None,
                wait: bool = False) -> dict[str, dict]:
    """Train (or retrain) the named heads on the HH entries of `sources` (the offline HH data when
    there are none, e.g. a run on other data scored by these heads); write `<cfg.dir>/metrics.json`;
    return metrics by name.

    Raises:
        BusyError: another process is training heads into `cfg.dir` (unless `wait`: then this one
            waits for it).
    """
    from paretohqd.data.sources import hh_paths

    _check_names(names)
    sources = hh_paths(DataConfig().sources if sources is None else sources)
    with hold(cfg.dir, wait=wait, say=lambda s: console.print(f"[dim]{s}[/]")):
        encoder = Encoder(device=cfg.device, dtype=cfg.dtype, max_length=cfg.max_length,
                          store=Path(cfg.dir) / "embeddings")
        results = {name: train_head(name, cfg, sources, encoder) for name in names}
        metrics_path = Path(cfg.dir) / "metrics.json"
        previous = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        write_json({**previous, **results}, metrics_path)
    return results


def ensure_trained(cfg: RewardsConfig, names: Sequence[str], *, sources: Sequence[str] | None = None) -> dict[str, dict]:
    """Train those of the named offline heads not saved in `cfg.dir` yet; return their metrics.
    Two runs that need the same head at once train it once: the second waits, then finds it."""
    _check_names(names)
    if all(head_marker(cfg, n).exists() for n in names):
        return {}
    with hold(cfg.dir, wait=True, say=lambda s: console.print(f"[dim]{s}[/]")):
        missing = [n for n in dict.fromkeys(names) if not head_marker(cfg, n).exists()]
        return train_heads(cfg, missing, sources=sources, wait=True) if missing else {}
