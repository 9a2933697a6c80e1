"""The scoring engine and `paretohqd score`: one float column per objective, cached and resumable.

Scores are cached per (reward model fingerprint, sample id) as Parquet chunks under
`<cache_dir>/<fingerprint>/`, each written atomically as soon as it is scored: a rerun scores only
ids it has not seen, and a run killed midway loses at most the chunk in flight.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from paretohqd.config import RewardsConfig
from paretohqd.devices import Ranks
from paretohqd.io import InputError, read_table, write_json, write_parquet
from paretohqd.lock import hold
from paretohqd.progress import console, progress_bar
from paretohqd.rewards import RewardModel

REQUIRED = ("id", "prompt", "response")
CHUNK_SIZE = RewardsConfig.model_fields["chunk_size"].default
"""Rows per cache file (`rewards.chunk_size`)."""

Scorer = Callable[[Sequence[str], Sequence[str], int], dict[str, np.ndarray]]


class ScoreCache:
    """One reward model's scores by sample id, in `chunk-*.parquet` files (never pickle).

    Several processes may fill one cache at once (two runs scoring with the same model): each
    writes files of its own name, renamed into place whole, and a reader takes the union by id.
    """

    def __init__(self, folder: Path):
        self.folder = folder

    def load(self) -> dict[str, float]:
        parts = []
        for f in sorted(self.folder.glob("chunk-*.parquet")):
            try:
                part = pd.read_parquet(f, columns=["id", "score"], page_checksum_verification=True)
            except (OSError, ValueError, KeyError) as e:  # pyarrow's errors are these
                # a cache is only a shortcut: what cannot be read is scored again
                console.print(f"[yellow]warning: discarding score cache file {f}, which cannot be read "
                              f"({str(e).strip()[:120]}); its samples are scored again[/]")
                f.unlink(missing_ok=True)
                continue
            parts.append(part)
        if not parts:
            return {}
        df = pd.concat(parts, ignore_index=True)
        return dict(zip(df["id"], df["score"]))

    def write(self, ids: Sequence[str], scores: np.ndarray) -> None:
        name = f"chunk-{time.time_ns()}-{os.getpid()}.parquet"
        write_parquet(pd.DataFrame({"id": list(ids), "score": scores.astype(np.float64)}), self.folder / name)


def _groups(models: dict[str, RewardModel]) -> list[tuple[list[str], Scorer]]:
    """Objectives grouped so that heads on one encoder share its embeddings; others stand alone."""
    from paretohqd.rewards.minilm import HeadRewardModel

    by_encoder: dict[int, list[str]] = {}
    groups: list[tuple[list[str], Scorer]] = []
    for obj, m in models.items():
        if isinstance(m, HeadRewardModel):
            by_encoder.setdefault(id(m.encoder), []).append(obj)
        else:
            groups.append(([obj], lambda p, r, bs, m=m, obj=obj: {obj: m.score(p, r, batch_size=bs)}))
    for objs in by_encoder.values():
        groups.append((objs, lambda p, r, bs, objs=objs: _score_heads({o: models[o] for o in objs}, p, r, bs)))
    return groups


def _score_heads(heads: dict, prompts: Sequence[str], responses: Sequence[str], batch_size: int) -> dict[str, np.ndarray]:
    """Embed prompts (if any head reads them) and responses once, then apply every head."""
    # the heads share one encoder: a pair head's embeddings serve every head (prompt ones are unused
    # by response-only heads)
    lead = next((h for h in heads.values() if h.inputs == "pair"), next(iter(heads.values())))
    p, r = lead.embed(prompts, responses, batch_size=batch_size)  # (n, 384) or None, (n, 384)
    return {obj: h.score_embeddings(p, r) for obj, h in heads.items()}


def _check_frame(df: pd.DataFrame, models: dict[str, RewardModel]) -> None:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise InputError(f"table to score lacks column(s) {missing}; it needs {list(REQUIRED)} (as `data prepare` writes)")
    for col in ("prompt", "response"):
        bad = df[~df[col].map(lambda x: isinstance(x, str))]
        if len(bad):
            raise InputError(f"sample id {bad['id'].iloc[0]!r}: {col} must be text, got {bad[col].iloc[0]!r}")
    clash = [o for o in models if o in df.columns]
    if clash:
        raise InputError(f"table already has column(s) {clash}; drop them or name the objectives differently")


def score_frame(
    df: pd.DataFrame,
    models: dict[str, RewardModel],
    *,
    cache_dir: str | Path,
    batch_size: int = 32,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
    ranks: Ranks | None = None,
) -> pd.DataFrame:
    """Score every row with every model; `df` is not modified.

    Args:
        df: columns id, prompt (HH text without the trailing "Assistant:"), response.
        models: objective name -> reward model (`load_reward_models`).
        cache_dir: score cache root; each model keys its own folder by fingerprint.
        batch_size: samples per forward pass.
        chunk_size: samples per cache file (the unit a killed run may lose, and a rank's share).
        progress: show a rich progress bar with rate and ETA.
        ranks: (every launched process calls this with the same `df`) the chunks not cached are
            split over the processes (`Ranks.spread`), the same chunks as one process scores, so
            the same scores; the main process alone reads and writes the cache.

    Returns:
        A copy of `df` with one float64 column per objective (on every rank).

    Raises:
        InputError: missing columns or non-text fields, naming the sample id.
        ValueError: a model scored a sample NaN (named by id; nothing of that chunk is cached).
    """
    _check_frame(df, models)
    ranks = ranks or Ranks()
    out = df.copy()
    unique = df.drop_duplicates("id").set_index("id", drop=False)
    with progress_bar(unit="samples", enabled=progress) as bar:
        for objs, scorer in _groups(models):
            caches = {o: ScoreCache(Path(cache_dir) / models[o].fingerprint) for o in objs}
            known = {o: c.load() if ranks.main else {} for o, c in caches.items()}
            todo = unique.loc[ranks.broadcast(_todo(unique, known) if ranks.main else None)]  # the main cache decides
            chunks = [todo.iloc[start:start + chunk_size] for start in range(0, len(todo), chunk_size)]
            task = bar.add_task("scoring " + ",".join(objs), total=len(todo))

            def done(c: int, scores: dict[str, np.ndarray], caches=caches, known=known, task=task) -> None:
                ids = chunks[c]["id"].tolist()
                for o in objs:
                    caches[o].write(ids, scores[o])
                    known[o].update(zip(ids, scores[o]))
                bar.advance(task, len(ids))

            jobs = [functools.partial(_score_chunk, scorer, chunk, objs, models, batch_size) for chunk in chunks]
            ranks.spread(jobs, done)
            for o in objs:  # (n,) on every rank: the main process knows them all
                out[o] = ranks.broadcast(df["id"].map(known[o]).astype(np.float64).to_numpy() if ranks.main else None)
    return out


def _todo(unique: pd.DataFrame, known: dict[str, dict]) -> list[str]:
    """The ids some objective lacks a score for, longest first: in chunks, the slowest chunk (and any
    memory error) comes early and the ETA is pessimistic. Character length tracks token length
    closely enough for chunking, and each model sorts by exact token length inside the chunk."""
    todo = unique[~unique["id"].map(lambda i: all(i in k for k in known.values()))]
    return todo["id"].iloc[np.argsort(-(todo["prompt"].str.len() + todo["response"].str.len()).to_numpy(),
                                      kind="stable")].tolist()


def _score_chunk(scorer: Scorer, chunk: pd.DataFrame, objs: list[str], models: dict[str, RewardModel],
                 batch_size: int) -> dict[str, np.ndarray]:
    """One chunk's scores per objective, checked (n_chunk,)."""
    scores = scorer(chunk["prompt"].tolist(), chunk["response"].tolist(), batch_size)
    for o in objs:
        scores[o] = _check_shape(scores[o], len(chunk), o, models[o].name)
        _check_finite(scores[o], chunk["id"], o, models[o].name)
    return scores


def _check_shape(scores, n: int, objective: str, name: str) -> np.ndarray:
    """One float per sample, or InputError: a model whose output is not a score per sample (a
    custom head, a token classifier) would otherwise be read as rewards."""
    out = np.asarray(scores)
    if out.shape != (n,) or not np.issubdtype(out.dtype, np.number):
        raise InputError(f"reward model {name!r} (objective {objective!r}) returned {out.dtype} scores of shape "
                         f"{out.shape} for {n} samples; a reward model gives one number per sample (a sequence "
                         "classifier's logit, rewards.logit)")
    return out.astype(np.float64)


def _check_finite(scores: np.ndarray, ids: pd.Series, objective: str, name: str) -> None:
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise ValueError(
            f"reward model {name!r} (objective {objective!r}) scored sample id {ids.iloc[bad[0]]!r} as "
            f"{scores[bad[0]]} ({len(bad)} non-finite in this batch); check the model's dtype and that input"
        )


def stats(df: pd.DataFrame, objectives: Sequence[str]) -> dict[str, dict[str, float]]:
    """min, max, mean, std (population) per objective column."""
    return {o: {"min": float(df[o].min()), "max": float(df[o].max()), "mean": float(df[o].mean()),
                "std": float(df[o].std(ddof=0))} for o in objectives}


def stats_path(out: str | Path) -> Path:
    """Where the statistics of `out` go: scores.parquet -> scores.stats.json."""
    return Path(out).with_suffix(".stats.json")


def write_scores(cfg, df: pd.DataFrame, out: str | Path, *, labels: bool = False, progress: bool = True,
                 ranks: Ranks | None = None) -> Path:
    """Score `df` with `cfg.rewards.models`; write `out` and its statistics record (per objective
    min/max/mean/std under "stats", with the models and their fingerprints) beside it.

    With `labels` (the prepared data), a column objective's score is its label column, and rows
    lacking a label are left out (counted in the record as `unlabelled_left_out`); without (generated
    answers), its trained scorer's. With `ranks` (every launched process calls this with the same
    `df`), the scoring is split over them (`score_frame`) and the main process alone writes.
    """
    from paretohqd.rewards import load_reward_models
    from paretohqd.rewards.labels import column_objectives

    copied = column_objectives(cfg.rewards) if labels else {}
    values, left_out = {}, 0
    if copied:
        df, values, left_out = _labels(df, copied)
    rest = [o for o in cfg.rewards.models if o not in copied]
    models = load_reward_models(cfg.rewards, data=cfg.data, only=rest) if rest else {}
    scored = score_frame(df, models, cache_dir=Path(cfg.rewards.dir) / "scores",
                         batch_size=cfg.rewards.batch_size, chunk_size=cfg.rewards.chunk_size, progress=progress,
                         ranks=ranks)
    if ranks is not None and not ranks.main:
        return Path(out)
    for o, v in values.items():
        scored[o] = v
    objectives = list(cfg.rewards.models)
    fingerprints = {o: f"column:{copied[o]}" if o in copied else models[o].fingerprint for o in objectives}
    # the table last: a run step takes `out` as its done-marker, so the stats must already be there
    write_json({"rows": len(scored), "models": dict(cfg.rewards.models), "fingerprints": fingerprints,
                "unlabelled_left_out": left_out, "stats": stats(scored, objectives),
                "config": cfg.rewards.model_dump(mode="json")}, stats_path(out))
    write_parquet(scored, out)
    return Path(out)


def _labels(df: pd.DataFrame, columns: dict[str, str]) -> tuple[pd.DataFrame, dict[str, np.ndarray], int]:
    """The rows of `df` that have every label of `columns` (objective -> label column), each
    objective's label values (n_kept,), and how many rows were left out.

    Raises:
        InputError: a label column the table lacks or that holds text, or no row with every label.
    """
    from paretohqd.rewards.labels import numeric_label

    values = {}
    for obj, col in columns.items():
        try:
            values[obj] = numeric_label(df, col)  # (n,)
        except InputError as e:
            raise InputError(f"rewards.models.{obj}: column:{col}: {e}") from None
    ok = np.logical_and.reduce([np.isfinite(v) for v in values.values()])  # (n,)
    wanted = sorted(set(columns.values()))
    if not ok.any():
        raise InputError(f"rewards.models: no sample has every label of {wanted}; check the label columns of data.sources")
    if not ok.all():
        console.print(f"[yellow]{int((~ok).sum()):,} of {len(df):,} samples lack a label of {wanted}: left out of "
                      "the scores and of selection[/]")
    return df[ok].reset_index(drop=True), {o: v[ok] for o, v in values.items()}, int((~ok).sum())


def score_file(cfg, data: str | Path, out: str | Path, *, progress: bool = True) -> Path:
    """`paretohqd score`: read `data`, train missing offline heads, score, write `out` and its stats.
    A column objective's score is its label when the table has every objective's label column (the
    data), else its trained scorer's (answers)."""
    from paretohqd.rewards import OFFLINE
    from paretohqd.rewards.heads import ensure_trained
    from paretohqd.rewards.labels import column_objectives

    with hold(out):  # one writer per output file; the score cache itself takes several (`ScoreCache`)
        df = read_table(data)
        ensure_trained(cfg.rewards, [n for n in cfg.rewards.models.values() if n in OFFLINE], sources=cfg.data.sources)
        columns = column_objectives(cfg.rewards)
        labels = bool(columns) and all(c in df.columns for c in columns.values())
        return write_scores(cfg, df, out, labels=labels, progress=progress)
