"""Rewards-in-Context (RiC; Yang et al., ICML 2024, arXiv 2402.10207): one model, rewards in the prompt.

We follow the authors' code (github.com/YangRui2015/RiC, `ric/utils.py`):

- **Training.** Each sample's rewards are z-normalised with the training set's mean and standard
  deviation per objective and rounded to one decimal (RiC's `build_dataset`), then written after
  the last user turn, where RiC writes them before "\\n\\nAssistant:". RiC's tags are
  `<rm1_score> 0.7 <rm2_score> -0.4`; ours carry the objective's name instead of its index, on a
  line of their own after the user's text::

      What is a good way to say no?

      <helpful_score> 0.7 <harmless_score> -0.4

  The model is fine-tuned on the (tagged prompt, response) pairs with the SFT loss.
- **Inference.** A preference w becomes desired rewards (RiC's `map_rewards_from_preference`),
  with lo_i / hi_i the min / max of the training z-scores of objective i and M objectives:
  `linf` (the paper's mapping, the default): the objective of largest weight asks for hi, every
  other i for min(M w_i, 1) (hi_i - lo_i) + lo_i; `l2`: w_i / ||w||_2 of the way from lo_i to hi_i
  (RiC's evaluation script); `linear`: w_i of the way. Values are rounded to one decimal, as RiC.
  The one model answers every preference, each with its own tag.

RiC's later online stages (generate with the model, keep the top-quantile answers, retrain) are
not implemented: this is RiC's offline stage, the part its paper reports as most of the gain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from paretohqd.config import Config
from paretohqd.io import read_table, write_json
from paretohqd.pareto.preferences import preferences_from_config
from paretohqd.policy.sft import finetune_rows
from paretohqd.progress import console
from paretohqd.runfolder import FinalModel, RunFolder, pref_name


def reward_tag(names: list[str], values: ArrayLike) -> str:
    """The reward tag RiC conditions on: one `<name_score> value` per objective, one decimal.

    Examples:
        >>> reward_tag(["helpful", "harmless"], [0.73, -0.41])
        '<helpful_score> 0.7 <harmless_score> -0.4'
        >>> reward_tag(["helpful"], [-0.04])  # no "-0.0": the model should never see two zeros
        '<helpful_score> 0.0'
    """
    values = np.round(np.asarray(values, dtype=np.float64), 1) + 0.0  # + 0.0 turns -0.0 into 0.0
    return " ".join(f"<{n}_score> {v:.1f}" for n, v in zip(names, values))


def desired_rewards(preference: ArrayLike, lo: ArrayLike, hi: ArrayLike, *, mapping: str = "linf") -> np.ndarray:
    """RiC's preference-to-reward mapping (`map_rewards_from_preference` in RiC's code).

    Args:
        preference: (M,) weights on the simplex.
        lo: (M,) lowest normalised training reward per objective.
        hi: (M,) highest normalised training reward per objective.
        mapping: `linf` (the paper's), `l2` or `linear`; see the module docstring.

    Returns:
        (M,) desired normalised rewards, rounded to one decimal.

    Examples:
        >>> desired_rewards([0.25, 0.75], [-2.0, -3.0], [2.0, 3.0]).tolist()  # 2 * 0.25 = half way
        [0.0, 3.0]
        >>> desired_rewards([0.5, 0.5], [-2.0, -3.0], [2.0, 3.0]).tolist()
        [2.0, 3.0]
        >>> desired_rewards([0.25, 0.75], [-2.0, -3.0], [2.0, 3.0], mapping="linear").tolist()
        [-1.0, 1.5]
    """
    w, lo, hi = (np.asarray(x, dtype=np.float64) for x in (preference, lo, hi))  # (M,) each
    if mapping == "linf":
        frac = np.minimum(len(w) * w, 1.0)
        frac[np.argmax(w)] = 1.0
    elif mapping == "l2":
        frac = w / np.linalg.norm(w)
    elif mapping == "linear":
        frac = w
    else:
        raise ValueError(f"unknown mapping {mapping!r}; use linf, l2 or linear (ric.mapping)")
    return np.round(frac * (hi - lo) + lo, 1) + 0.0


def reward_stats(scores: pd.DataFrame, names: list[str]) -> dict:
    """Mean and std per objective (RiC's normalisation), and the min / max of the z-scores."""
    values = scores[names].to_numpy(dtype=np.float64)  # (N, M)
    mean, std = values.mean(axis=0), values.std(axis=0)  # (M,)
    std = np.where(std > 0, std, 1.0)  # a constant reward carries no information; keep it at 0
    z = (values - mean) / std  # (N, M)
    return {"objectives": names, "mean": mean.tolist(), "std": std.tolist(),
            "lo": np.round(z.min(axis=0), 1).tolist(), "hi": np.round(z.max(axis=0), 1).tolist()}


# Method ------------------------------------------------------------------------------------------


def steps(cfg: Config) -> int:
    n_prefs = len(preferences_from_config(cfg.select.preferences, len(cfg.rewards.models)))
    return cfg.ric.steps or cfg.train.steps * n_prefs


def train(r: RunFolder, tokenizer) -> None:
    """Fine-tune RiC's one model on reward-tagged samples; save `ric/rewards.json` beside it."""
    out = r.path("ric", "model")
    with r.fan_out("train"):  # one task under `executor: ray`
        r.step("ric/train", out / "train.json", lambda: _finetune(r, tokenizer, out), every_process=True)


def _finetune(r: RunFolder, tokenizer, out: Path) -> None:
    cfg, names = r.cfg, r.objectives
    scores = read_table(r.scores)
    stats = reward_stats(scores, names)
    n_steps = steps(cfg)
    # the loop takes the first steps x batch samples of a seeded shuffle; drawing them here is the
    # same in distribution and spares encoding samples the budget never reaches
    n = min(len(scores), n_steps * cfg.train.batch_size)
    rows = scores.sample(n=n, random_state=cfg.seed).reset_index(drop=True)
    z = (rows[names].to_numpy(dtype=np.float64) - stats["mean"]) / stats["std"]  # (n, M)
    console.print(f"  RiC: {n:,} of {len(scores):,} samples, {n_steps} steps; tags like "
                  f"{reward_tag(names, z[0])!r}")
    write_json(stats, out.parent / "rewards.json")
    finetune_rows(cfg, tokenizer, rows, out, steps=n_steps, seed=cfg.seed, tags=[reward_tag(names, zi) for zi in z],
                  **r.log_to(str(out.relative_to(r.root))))


def final_models(r: RunFolder) -> list[FinalModel]:
    """The one model once per preference, each with its desired-reward tag."""
    model = r.path("ric", "model")
    return [FinalModel(pref_name(i), w, model, model / "train.json", preference_tag(r, w))
            for i, w in enumerate(r.preferences)]


def preference_tag(r: RunFolder, weights: ArrayLike) -> str | None:
    """The tag that asks the run's model for preference `weights` (any point of the simplex), from
    the training rewards' range in `ric/rewards.json`; None before training wrote it."""
    stats_path = r.path("ric", "rewards.json")
    if not stats_path.exists():
        return None
    stats = json.loads(stats_path.read_text())
    return reward_tag(r.objectives, desired_rewards(weights, stats["lo"], stats["hi"], mapping=r.cfg.ric.mapping))


def describe(cfg: Config) -> str:
    return f"RiC (one model, rewards in the prompt, {cfg.ric.mapping} mapping, {steps(cfg)} steps)"


def work(cfg: Config) -> dict[str, float]:
    n_prefs = len(preferences_from_config(cfg.select.preferences, len(cfg.rewards.models)))
    return {"train_samples": steps(cfg) * cfg.train.batch_size, "models": n_prefs}
