"""Column objectives: a label of the data is an objective's score, and a scorer trained on that label
scores what the data does not label (stage-2 answers, evaluation answers).

`rewards.models` names one as `OBJECTIVE: column:LABEL`. Selection reads LABEL from the prepared
data; `paretohqd reward train --objective OBJECTIVE` trains its scorer on `data.sources`:

- `--from-column COL` (default: LABEL): ridge regression from frozen MiniLM features ([p, r, p*r],
  as the offline heads) to the label, the penalty chosen on a validation split (ArmoRM's recipe);
  its scores are on the label's scale, so evaluation compares with the data's labels directly;
- `--from-pairs COL`: Bradley-Terry on answer pairs (`pair_id`, `response_id`; COL names each
  pair's preferred response_id, e.g. PKU-SafeRLHF's `better_response_id`), then mapped onto
  LABEL's scale by a least-squares line (slope and shift saved with it).

A scorer is saved in `<rewards.dir>/labels/<objective>-<key>/` (a head as the offline ones), where
key hashes the objective, its label and `data.sources` (local paths absolute): a run finds the
scorer trained on its own data with no setting to write, and one trained on other data is never
used. Training again replaces it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from paretohqd.config import ConfigError, DataConfig, RewardsConfig
from paretohqd.data.prepare import label_frame, prompt_id, sample_id
from paretohqd.data.sources import describe, read_rows
from paretohqd.data.transcript import last_turn
from paretohqd.io import InputError
from paretohqd.rewards.heads import split, train_bt
from paretohqd.rewards.minilm import ENCODER, Encoder, RewardHead, features, load_head_model, save_head
from paretohqd.rewards.ridge import fit_ridge, pearson

if TYPE_CHECKING:
    from paretohqd.config import Config
    from paretohqd.rewards.minilm import HeadRewardModel

COLUMN = "column:"
"""Prefix of a column objective's value in `rewards.models`."""
MIN_SAMPLES = 10
"""Fewest labelled samples (or pairs) a scorer is trained on."""


def column_objectives(cfg: RewardsConfig) -> dict[str, str]:
    """Objective -> label column, for the `column:LABEL` entries of `rewards.models`.

    Examples:
        >>> column_objectives(RewardsConfig(models={"a": "column:x", "b": "minilm-helpful"}))
        {'a': 'x'}
    """
    return {o: n[len(COLUMN):] for o, n in cfg.models.items() if n.startswith(COLUMN)}


def scorer_dir(rewards: RewardsConfig, data: DataConfig, objective: str) -> Path:
    """Where the scorer of column objective `objective`, trained on `data.sources`, is saved."""
    key = {"objective": objective, "column": column_objectives(rewards)[objective],
           "sources": [describe(s, data.hub_split) for s in data.sources]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(rewards.dir) / "labels" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', objective)}-{digest}"


def train_command(objective: str, column: str, config_args: str = "--config CONFIG") -> str:
    """The command that trains a column objective's scorer (for error messages)."""
    return f"paretohqd reward train {config_args} --objective {objective} --from-column {column}"


def missing_scorers(rewards: RewardsConfig, data: DataConfig, config_args: str = "--config CONFIG") -> list[str]:
    """One line per column objective without a trained scorer, naming the command that trains it."""
    return [f"rewards.models.{o}: column objective {o!r} has no scorer trained on these data.sources (stage 2 and "
            f"evaluation score generated answers with it); train it: {train_command(o, c, config_args)}"
            for o, c in column_objectives(rewards).items() if not (scorer_dir(rewards, data, o) / "config.json").exists()]


def load_scorer(rewards: RewardsConfig, data: DataConfig, objective: str, *, encoders: dict) -> HeadRewardModel:
    """The trained scorer of a column objective.

    Raises:
        ConfigError: it is not trained yet; the message names the command.
    """
    folder = scorer_dir(rewards, data, objective)
    if not (folder / "config.json").exists():
        raise ConfigError(missing_scorers(rewards.model_copy(update={"models": {objective: rewards.models[objective]}}),
                                          data)[0])
    return load_head_model(folder, rewards, encoders=encoders)


# Data --------------------------------------------------------------------------------------------


def labelled_samples(data: DataConfig) -> pd.DataFrame:
    """Every non-empty sample of `data.sources` (not deduplicated: a pair needs both of its answers),
    with columns id, prompt, response and the labels."""
    samples = [s for row in read_rows(data.sources, data.hub_split) for s in row if s.response]
    df = pd.DataFrame({"id": [sample_id(s.prompt, s.response) for s in samples],
                       "prompt": [s.prompt for s in samples], "response": [s.response for s in samples]})
    labels = label_frame([s.labels for s in samples])
    return pd.concat([df, labels.drop(columns=[c for c in labels.columns if c in df.columns])], axis=1)


def numeric_label(df: pd.DataFrame, column: str, /) -> np.ndarray:
    """(n,) float label values (flags as 0/1, missing as NaN).

    Raises:
        InputError: no such column, or one holding text.
    """
    if column not in df.columns:
        labels = [c for c in df.columns if c not in ("id", "prompt", "response")]
        raise InputError(f"data.sources have no label column {column!r}; their label columns: {labels or 'none'}")
    values = df[column]
    text = values[values.map(lambda v: isinstance(v, str))]
    if len(text):
        raise InputError(f"label column {column!r} holds text ({text.iloc[0]!r} for sample id {df['id'][text.index[0]]}); "
                         "a score must be a number or a flag")
    return values.map(lambda v: np.nan if v is None else float(v)).to_numpy(dtype=np.float64)


def _features(prompts: list[str], responses: list[str], encoder: Encoder) -> torch.Tensor:
    """(n, 1152) head features of (HH prompt, response) rows, as the offline pair heads read them."""
    p = encoder.embed([last_turn(x) for x in prompts])  # (n, 384)
    return features(p, encoder.embed(responses), "pair")


def group_split(groups: list[str], held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) row indices with every group (prompt) on one side only, so a held-out
    score never comes from a prompt the scorer was fitted on.

    Examples:
        >>> [x.tolist() for x in group_split(["a", "a", "b", "c", "c"], 0.34, 0)]
        [[0, 1, 2], [3, 4]]
    """
    unique = np.array(sorted(set(groups)))
    _, held = split(len(unique), held_out, seed)
    held_groups = set(unique[held])
    mask = np.array([g in held_groups for g in groups])
    return np.flatnonzero(~mask), np.flatnonzero(mask)


# Training ----------------------------------------------------------------------------------------


def train_from_column(df: pd.DataFrame, column: str, cfg: RewardsConfig, encoder: Encoder) -> tuple[RewardHead, dict]:
    """Ridge head from features to label `column`: prompts split into fit / validation (chooses the
    penalty) / held-out (measures it), by `rewards.held_out` and `seed`.

    Returns:
        The linear head and its metrics: held-out Pearson correlation, RMSE and R^2 (against
        predicting the training mean), the chosen penalty and the sizes.
    """
    y = numeric_label(df, column)  # (n,)
    df = df.assign(_y=y)[np.isfinite(y)].drop_duplicates("id").reset_index(drop=True)
    prompts = df["prompt"].map(prompt_id).tolist()
    if len(df) < MIN_SAMPLES or len(set(prompts)) < 3:
        raise InputError(f"label {column!r}: {len(df)} labelled samples over {len(set(prompts))} prompts in data.sources; "
                         f"a scorer needs at least {MIN_SAMPLES} samples and 3 prompts")
    y = df["_y"].to_numpy()
    x = _features(df["prompt"].tolist(), df["response"].tolist(), encoder).double().numpy()  # (n, 1152)
    train, held = group_split(prompts, cfg.held_out, cfg.seed)
    fit, val = (train[i] for i in group_split([prompts[j] for j in train], cfg.held_out, cfg.seed + 1))
    w, b, choice = fit_ridge(x[fit], y[fit], x[val], y[val], alphas=cfg.ridge_alphas)
    pred = x @ w + b  # (n,)
    err = pred[held] - y[held]
    baseline = ((y[held] - y[train].mean()) ** 2).mean()
    metrics = {"held_out_correlation": pearson(pred[held], y[held]), "held_out_rmse": float(np.sqrt((err**2).mean())),
               "held_out_r2": float(1 - (err**2).mean() / baseline) if baseline > 0 else float("nan"),
               "train_correlation": pearson(pred[train], y[train]), "alpha": choice["alpha"],
               "validation_mse": choice["validation_mse"], "held_out_samples": len(held), "train_samples": len(train)}
    head = RewardHead(x.shape[1], 0)
    with torch.no_grad():
        head.net.weight.copy_(torch.as_tensor(w, dtype=torch.float32)[None, :])
        head.net.bias.fill_(b)
    return head, metrics


def _pairs(df: pd.DataFrame, pair_column: str) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (n_pairs,) of each pair's preferred and other answer; pairs without a 0/1
    preference or without both answers are left out."""
    for needed in ("pair_id", "response_id"):
        if needed not in df.columns:
            raise InputError(f"--from-pairs needs answer pairs: data.sources give no {needed!r} column (the pairs, "
                             "pku-saferlhf and ultrafeedback formats write pair_id and response_id)")
    preferred = numeric_label(df, pair_column)  # (n,)
    response = numeric_label(df, "response_id")  # (n,)
    chosen, rejected = [], []
    for rows in df.groupby("pair_id", sort=False).indices.values():
        if len(rows) != 2 or {response[rows[0]], response[rows[1]]} != {0.0, 1.0} or preferred[rows[0]] not in (0.0, 1.0):
            continue
        first_wins = response[rows[0]] == preferred[rows[0]]
        chosen.append(rows[0] if first_wins else rows[1])
        rejected.append(rows[1] if first_wins else rows[0])
    return np.array(chosen, dtype=int), np.array(rejected, dtype=int)


def train_from_pairs(df: pd.DataFrame, pair_column: str, column: str, cfg: RewardsConfig,
                     encoder: Encoder) -> tuple[RewardHead, dict]:
    """Bradley-Terry head on the pairs (as the HH heads), then a least-squares line from its score
    to label `column` over the training pairs' answers, folded into its last layer.

    Returns:
        The head and its metrics: held-out pair accuracy (as the HH heads), the line's slope and
        shift, and the held-out answers' correlation with `column`.
    """
    chosen, rejected = _pairs(df, pair_column)
    if len(chosen) < MIN_SAMPLES:
        raise InputError(f"--from-pairs {pair_column}: {len(chosen)} usable pairs in data.sources (both answers, "
                         f"a 0/1 preference); a scorer needs at least {MIN_SAMPLES}")
    x = _features(df["prompt"].tolist(), df["response"].tolist(), encoder)  # (n, 1152)
    head, metrics = train_bt(x[chosen], x[rejected], cfg)
    train, held = split(len(chosen), cfg.held_out, cfg.seed)  # the pair split train_bt used
    with torch.inference_mode():
        score = head(x).double().numpy()  # (n,)
    y = numeric_label(df, column)  # (n,)
    fit_rows = np.concatenate([chosen[train], rejected[train]])
    fit_rows = fit_rows[np.isfinite(y[fit_rows])]
    slope, shift = np.polyfit(score[fit_rows], y[fit_rows], 1) if len(fit_rows) >= 2 else (1.0, 0.0)
    last = head.net if isinstance(head.net, torch.nn.Linear) else head.net[-1]
    with torch.no_grad():
        last.weight.mul_(float(slope))
        last.bias.mul_(float(slope)).add_(float(shift))
    held_rows = np.concatenate([chosen[held], rejected[held]])
    held_rows = held_rows[np.isfinite(y[held_rows])]
    metrics.update(calibration_slope=float(slope), calibration_shift=float(shift),
                   held_out_correlation=pearson(slope * score[held_rows] + shift, y[held_rows]))
    return head, metrics


def train_label_scorer(cfg: Config, objective: str, *, from_column: str | None = None,
                       from_pairs: str | None = None) -> dict:
    """`paretohqd reward train --objective`: train a column objective's scorer on `data.sources`,
    save it where runs of this config find it; return its metrics (with `folder`).

    Raises:
        InputError: not a column objective, both --from options, a missing or text label, too few
            labelled samples or pairs.
    """
    columns = column_objectives(cfg.rewards)
    if objective not in columns:
        what = f"is {cfg.rewards.models[objective]!r}" if objective in cfg.rewards.models else "is not set"
        raise InputError(f"--objective {objective}: rewards.models.{objective} {what}, not a column objective; write "
                         f"{objective}: column:LABEL in rewards.models (objectives: {list(cfg.rewards.models)})")
    if from_column and from_pairs:
        raise InputError("give one of --from-column (regression on a label) or --from-pairs (Bradley-Terry on pairs)")
    r = cfg.rewards
    df = labelled_samples(cfg.data)
    encoder = Encoder(device=r.device, dtype=r.dtype, max_length=r.max_length, store=Path(r.dir) / "embeddings")
    t0 = time.perf_counter()
    if from_pairs:
        head, metrics = train_from_pairs(df, from_pairs, columns[objective], r, encoder)
        trained_from = {"pairs": from_pairs}
    else:
        head, metrics = train_from_column(df, from_column or columns[objective], r, encoder)
        trained_from = {"column": from_column or columns[objective]}
    metrics["train_seconds"] = round(time.perf_counter() - t0, 1)
    folder = scorer_dir(r, cfg.data, objective)
    meta = {"objective": objective, "column": columns[objective], "trained_from": trained_from, "inputs": "pair",
            "hidden": r.hidden if from_pairs else 0, "encoder": ENCODER, "encoder_fingerprint": encoder.fingerprint,
            "data": [describe(s, cfg.data.hub_split) for s in cfg.data.sources], "metrics": metrics,
            "train_config": {k: getattr(r, k) for k in ("seed", "held_out", "epochs", "lr", "weight_decay", "hidden",
                                                         "ridge_alphas", "dtype", "max_length")}}
    save_head(head, meta, folder)
    return {"folder": str(folder), **metrics}
