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
  `linf` (the default, as `map_rewards_from_preference`'s own default in RiC's `ric/utils.py`): the
  objective of largest weight asks for hi, every other i for min(M w_i, 1) (hi_i - lo_i) + lo_i;
  `l2`: w_i / ||w||_2 of the way from lo_i to hi_i, what RiC's `ric/evaluation.py` passes
  (`method='l2'`) for the LLM fronts it reports, so the paper configs use it; `linear`: w_i of the
  way. Values are rounded to one decimal, as RiC.
  The one model answers every preference, each with its own tag.

- **Online rounds** (`ric.online_rounds`, following RiC's `main.py`, `generation.py` and
  `utils.py`): the current model answers `online_prompts` training prompts drawn with replacement,
  each asked for random desired rewards (RiC's `sample_goals`: one objective uniform in [lo, hi],
  every other at hi); the answers are scored by the run's reward models and z-normalised with the
  offline statistics; an answer is kept if any objective is at or above the `online_quantile`
  quantile of the answers (RiC's `select_data_with_quantile`), and `online_origin` offline samples
  passing the same filter on the offline data join them; the model trains on them, tagged with the
  rewards they *obtained*, for `online_steps` steps at `online_lr`, from the previous round's adapter.
  Differences: RiC draws the goals' range from N(0, 1) quantiles (about +-4.3), we from the training
  z-scores' range that the offline model saw (`lo`, `hi` of rewards.json); RiC's online learning rate
  is constant, ours keeps finetune's warmup and schedule; answers that come back empty are dropped
  (RiC drops "bad" ones by its own cleaning rules).
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from paretohqd.config import Config
from paretohqd.data.prepare import sample_id
from paretohqd.io import read_table, write_json, write_parquet
from paretohqd.pareto.preferences import preferences_from_config
from paretohqd.policy.generate import answer
from paretohqd.policy.prompts import with_tag
from paretohqd.policy.sft import finetune_rows
from paretohqd.rewards.normalise import Normaliser
from paretohqd.rewards.score import write_scores
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
        mapping: `linf`, `l2` (RiC's evaluation script's) or `linear`; see the module docstring.

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
    normalise = Normaliser.fit(values)
    z = normalise(values)  # (N, M)
    return {"objectives": names, "mean": normalise.mean.tolist(), "std": normalise.std.tolist(),
            "lo": np.round(z.min(axis=0), 1).tolist(), "hi": np.round(z.max(axis=0), 1).tolist()}


def _normaliser(stats: dict) -> Normaliser:
    """The normalisation `reward_stats` recorded (`ric/rewards.json`)."""
    return Normaliser(np.asarray(stats["mean"]), np.asarray(stats["std"]))


# Method ------------------------------------------------------------------------------------------


def steps(cfg: Config) -> int:
    n_prefs = len(preferences_from_config(cfg.select.preferences, len(cfg.rewards.models)))
    return cfg.ric.steps or cfg.train.steps * n_prefs


def train(r: RunFolder, tokenizer) -> None:
    """Fine-tune RiC's one model on reward-tagged samples (`ric/rewards.json` beside it), then run
    the online rounds, each from the model before it."""
    out = r.path("ric", "model")
    with r.fan_out("train"):  # one task under `executor: ray`
        r.step("ric/train", out / "train.json", lambda: _finetune(r, tokenizer, out), every_process=True)
    for t in range(1, r.cfg.ric.online_rounds + 1):
        _online_round(r, tokenizer, t, previous=model_dir(r, t - 1))


def model_dir(r: RunFolder, round_: int | None = None) -> Path:
    """The model after online round `round_` (0: the offline model; None: the last round's)."""
    round_ = r.cfg.ric.online_rounds if round_ is None else round_
    return r.path("ric", "model") if round_ == 0 else r.path("ric", f"online-{round_}", "model")


def sample_goals(n: int, lo: ArrayLike, hi: ArrayLike, rng: np.random.Generator) -> np.ndarray:
    """RiC's `sample_goals`: (n, M) desired rewards, each row uniform in [lo, hi], then every
    objective but the row's lowest set to hi (ask for the best on all but one), rounded to one decimal.

    Examples:
        >>> g = sample_goals(1000, [-2.0, -3.0], [2.0, 3.0], np.random.default_rng(0))
        >>> bool(((g == [2.0, 3.0]).sum(axis=1) >= 1).all()), bool((g >= [-2.0, -3.0]).all())
        (True, True)
    """
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)  # (M,) each
    goals = rng.uniform(lo, hi, size=(n, len(lo)))  # (n, M)
    keep = goals.argmin(axis=1)
    out = np.broadcast_to(hi, goals.shape).copy()
    out[np.arange(n), keep] = goals[np.arange(n), keep]
    return np.round(out, 1) + 0.0


def top_quantile(z: np.ndarray, q: float) -> np.ndarray:
    """(N,) mask of the rows with any objective at or above its `q` quantile over the rows
    (RiC's `select_data_with_quantile`), for z of shape (N, M).

    Examples:
        >>> top_quantile(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]), 0.7).tolist()
        [False, True, True, False]
    """
    return (z >= np.quantile(z, q, axis=0)).any(axis=1)


def _online_round(r: RunFolder, tokenizer, t: int, previous: Path) -> None:
    cfg, names, o = r.cfg, r.objectives, r.cfg.ric
    folder = r.path("ric", f"online-{t}")
    generated, scored, out = folder / "generated.parquet", folder / "scores.parquet", model_dir(r, t)

    def ask() -> None:
        stats = json.loads(r.path("ric", "rewards.json").read_text())
        rng = np.random.default_rng([cfg.seed, t])
        prompts = read_table(r.train_data).drop_duplicates("prompt").reset_index(drop=True)
        rows = prompts.iloc[rng.integers(0, len(prompts), o.online_prompts)].reset_index(drop=True)
        goals = sample_goals(len(rows), stats["lo"], stats["hi"], rng)  # (n, M)
        tagged = [with_tag(list(m), reward_tag(names, g)) for m, g in zip(rows["messages"], goals)]
        sampling = cfg.model_copy(update={"generate": cfg.generate.model_copy(update={"temperature": o.online_temperature})})
        saved = folder / ".generated.batches"
        responses = answer(sampling, tokenizer, tagged, previous, seed=cfg.seed + 1000 * t,
                           label=f"RiC online round {t}", saved=saved)
        df = rows[["prompt", "messages"]].assign(response=responses, source=f"ric:online-{t}")
        df = df[df["response"].str.len() > 0]
        df.insert(0, "id", [sample_id(p, a) for p, a in zip(df["prompt"], df["response"])])
        write_parquet(df.drop_duplicates("id"), generated)
        shutil.rmtree(saved, ignore_errors=True)

    with r.fan_out("generate"):
        r.step(f"ric/online-{t}/generate", generated, ask)
    r.step(f"ric/online-{t}/score", scored, lambda: write_scores(cfg, read_table(generated), scored))

    def fit() -> None:
        normalise = _normaliser(json.loads(r.path("ric", "rewards.json").read_text()))
        new = read_table(scored)
        new_z = normalise(new[names].to_numpy(dtype=np.float64))  # (n, M)
        offline = read_table(r.scores)
        off_z = normalise(offline[names].to_numpy(dtype=np.float64))  # (N, M)
        keep = np.flatnonzero(top_quantile(off_z, o.online_quantile))
        keep = np.random.default_rng([cfg.seed, t, 1]).permutation(keep)[:o.online_origin]
        mask = top_quantile(new_z, o.online_quantile)
        rows = pd.concat([offline.iloc[keep], new[mask]], ignore_index=True)
        z = np.concatenate([off_z[keep], new_z[mask]])
        console.print(f"  RiC online round {t}: {int(mask.sum()):,} of {len(new):,} answers kept "
                      f"(quantile {o.online_quantile}) + {len(keep):,} offline samples")
        online = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": o.online_lr})})
        finetune_rows(online, tokenizer, rows, out, steps=o.online_steps, seed=cfg.seed + t, init_adapter=previous,
                      tags=[reward_tag(names, zi) for zi in z], **r.log_to(str(out.relative_to(r.root))))

    with r.fan_out("train"):
        r.step(f"ric/online-{t}/train", out / "train.json", fit, every_process=True)


def _finetune(r: RunFolder, tokenizer, out: Path) -> None:
    cfg, names = r.cfg, r.objectives
    scores = read_table(r.scores)
    stats = reward_stats(scores, names)
    n_steps = steps(cfg)
    # the loop takes the first steps x batch samples of a seeded shuffle; drawing them here is the
    # same in distribution and spares encoding samples the budget never reaches
    n = min(len(scores), n_steps * cfg.train.batch_size)
    rows = scores.sample(n=n, random_state=cfg.seed).reset_index(drop=True)
    z = _normaliser(stats)(rows[names].to_numpy(dtype=np.float64))  # (n, M)
    console.print(f"  RiC: {n:,} of {len(scores):,} samples, {n_steps} steps; tags like "
                  f"{reward_tag(names, z[0])!r}")
    write_json(stats, out.parent / "rewards.json")
    finetune_rows(cfg, tokenizer, rows, out, steps=n_steps, seed=cfg.seed, tags=[reward_tag(names, zi) for zi in z],
                  **r.log_to(str(out.relative_to(r.root))))


def final_models(r: RunFolder) -> list[FinalModel]:
    """The one model once per preference, each with its desired-reward tag, and the tag for any
    other preference (`tag_for`): the model answers every preference."""
    model = model_dir(r)
    return [FinalModel(pref_name(i), w, model, model / "train.json", preference_tag(r, w),
                       tag_for=partial(preference_tag, r))
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
    o = cfg.ric
    online = (f" + {o.online_rounds} online round(s) of {o.online_prompts:,} answers and {o.online_steps} steps"
              if o.online_rounds else "")
    return f"RiC (one model, rewards in the prompt, {o.mapping} mapping, {steps(cfg)} steps{online})"


def work(cfg: Config, n_samples: int | None = None) -> dict[str, float]:
    n_prefs = len(preferences_from_config(cfg.select.preferences, len(cfg.rewards.models)))
    o = cfg.ric
    return {"train_samples": (steps(cfg) + o.online_rounds * o.online_steps) * cfg.train.batch_size,
            "generated_tokens": o.online_rounds * o.online_prompts * cfg.generate.max_new_tokens, "models": n_prefs}
