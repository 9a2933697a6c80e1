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


def with_tag(messages: list[dict], tag: str) -> list[dict]:
    """The conversation with `tag` on a line of its own after the last user turn (a new copy).

    Examples:
        >>> with_tag([{"role": "user", "content": "Hi"}], "<helpful_score> 1.0")
        [{'role': 'user', 'content': 'Hi\\n\\n<helpful_score> 1.0'}]
    """
    out = [dict(m) for m in messages]
    users = [i for i, m in enumerate(out) if m["role"] == "user"]
    if not users:  # no user turn to attach to: the tag becomes one
        return [{"role": "user", "content": tag}, *out]
    out[users[-1]]["content"] = f"{out[users[-1]]['content']}\n\n{tag}"
    return out


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


# Stage -------------------------------------------------------------------------------------------


def steps(cfg: Config) -> int:
    n_prefs = len(preferences_from_config(cfg.select.preferences, len(cfg.rewards.models)))
    return cfg.ric.steps or cfg.train.steps * n_prefs


def train(cfg: Config, tokenizer, scores_path: Path, out: Path) -> None:
    """Fine-tune RiC's one model on reward-tagged samples; save `ric/rewards.json` beside it."""
    from paretohqd.pipeline import console
    from paretohqd.train.sft import encode
    from paretohqd.train.sft import train as sft

    names = list(cfg.rewards.models)
    scores = read_table(scores_path)
    stats = reward_stats(scores, names)
    n_steps = steps(cfg)
    # the loop takes the first steps x batch samples of a seeded shuffle; drawing them here is the
    # same in distribution and spares encoding samples the budget never reaches
    n = min(len(scores), n_steps * cfg.train.batch_size)
    rows = scores.sample(n=n, random_state=cfg.seed).reset_index(drop=True)
    z = (rows[names].to_numpy(dtype=np.float64) - stats["mean"]) / stats["std"]  # (n, M)
    samples = [encode(tokenizer, with_tag(list(m), reward_tag(names, zi)), resp, cfg.train.max_length)
               for m, resp, zi in zip(rows["messages"], rows["response"], z)]
    console.print(f"  RiC: {n:,} of {len(scores):,} samples, {n_steps} steps; tags like "
                  f"{reward_tag(names, z[0])!r}")
    write_json(stats, out.parent / "rewards.json")
    sft(samples, out, policy=cfg.policy, cfg=cfg.train, steps=n_steps, seed=cfg.seed,
        pad_id=tokenizer.pad_token_id)


def final_models(cfg: Config, root: Path) -> list[dict]:
    """The one model once per preference, each with its desired-reward tag."""
    names = list(cfg.rewards.models)
    prefs = preferences_from_config(cfg.select.preferences, len(names))  # (P, M)
    model, stats_path = root / "ric" / "model", root / "ric" / "rewards.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else None
    return [{"model": f"pref-{i:02d}", "weights": w, "adapter": model, "done": model / "train.json",
             "tag": None if stats is None else
             reward_tag(names, desired_rewards(w, stats["lo"], stats["hi"], mapping=cfg.ric.mapping))}
            for i, w in enumerate(prefs)]
