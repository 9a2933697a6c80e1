"""Rewarded Soups (Ramé et al., NeurIPS 2023, arXiv 2306.04488): one model per objective, then
for each preference w the models' weights interpolated linearly, theta_w = sum_i w_i theta_i.

Per-objective training is a config choice (`soups.train`): `sft`, fine-tuning on that objective's
top `select.k` training samples for `train.steps` steps (the cheap offline variant), or `grpo`,
RL on that objective's reward alone with the `morlhf` settings (the paper's RL variant).

Every objective's model is a LoRA adapter on the same base W, so theta_i = W + dW_i with
dW_i = s B_i A_i, and the soup is W + sum_i w_i dW_i, built exactly by
`policy.load.write_weighted_adapters` (PEFT's `cat` combination; its `linear` one would add cross
terms B_i A_j that no objective's model contains, so not an interpolation of the models). With
`morlhf.init: sft` each objective's RL model starts from the run's SFT model (`methods.start`), so dW_i
holds the SFT delta too, and since sum_i w_i = 1 the soup keeps it whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from paretohqd.config import Config
from paretohqd.io import read_table, write_parquet
from paretohqd.methods import morlhf, start
from paretohqd.methods.contract import per_preference
from paretohqd.pareto.preferences import preferences_from_config
from paretohqd.policy.load import write_weighted_adapters
from paretohqd.policy.sft import finetune_rows
from paretohqd.runfolder import FinalModel, RunFolder, pref_name


def objective_dir(r: RunFolder, i: int) -> Path:
    return r.path("soups", f"objective-{i:02d}")


def select_top(scores: pd.DataFrame, names: list[str], k: int) -> pd.DataFrame:
    """Each objective's top-k samples by that objective's reward (ties: first in the table).

    Returns:
        Rows preference_index (= objective index), weights (one-hot), id, reward.
    """
    parts = []
    eye = np.eye(len(names))
    for i, name in enumerate(names):
        top = scores.sort_values(name, ascending=False, kind="stable").head(k)
        parts.append(pd.DataFrame({"preference_index": i, "weights": [eye[i].tolist()] * len(top),
                                   "id": top["id"].to_numpy(), "reward": top[name].to_numpy()}))
    return pd.concat(parts, ignore_index=True)


def merge(policy, adapters: list[Path], preferences: np.ndarray, outs: list[Path]) -> None:
    """Write one soup adapter per preference: sum_i w_i dW_i, exactly (see the module docstring).

    Args:
        policy: the `policy` config section (the base model all adapters were trained on).
        adapters: M adapter folders, one per objective.
        preferences: (P, M) weights.
        outs: P folders to write, each a plain PEFT adapter folder plus `merge.json`.
    """
    write_weighted_adapters(policy, adapters, preferences.tolist(), outs)


def train(r: RunFolder, tokenizer) -> None:
    """Train each objective's model, then write every preference's soup."""
    cfg = r.cfg
    selection = r.path("soups", "selection.parquet")
    r.step("soups/select", selection,
           lambda: write_parquet(select_top(read_table(r.scores), r.objectives, cfg.select.k), selection))
    eye = np.eye(len(r.objectives))
    grpo_init = cfg.soups.train == "grpo" and cfg.morlhf.init == "sft"
    init = start.sft_model(r, tokenizer, key="morlhf.init") if grpo_init else None
    with r.fan_out("train"):  # the objectives' models are independent (one task each under `executor: ray`)
        for i, name in enumerate(r.objectives):
            out = objective_dir(r, i)
            if cfg.soups.train == "sft":
                def fit(i=i, out=out) -> None:
                    scores = read_table(r.scores).set_index("id")
                    chosen = read_table(selection)
                    rows = scores.loc[chosen.loc[chosen["preference_index"] == i, "id"]]
                    finetune_rows(cfg, tokenizer, rows, out, steps=cfg.train.steps, seed=cfg.seed + i,
                                  **r.log_to(f"soups/objective-{i:02d}"))
            else:
                def fit(i=i, out=out) -> None:
                    morlhf.train_preference(r, tokenizer, eye[i], out, seed=cfg.seed + i, init=init)
            r.step(f"soups/objective-{i:02d} {name}", out / "train.json", fit, every_process=cfg.soups.train == "sft")
    outs = [r.path("soups", pref_name(i)) for i in range(len(r.preferences))]
    r.step("soups/merge", outs[-1] / "merge.json",
           lambda: merge(cfg.policy, [objective_dir(r, i) for i in range(len(r.objectives))], r.preferences, outs))


def final_models(r: RunFolder) -> list[FinalModel]:
    return per_preference(r, "soups", r.preferences, "merge.json")


def describe(cfg: Config) -> str:
    per = f"SFT on top-{cfg.select.k}, {cfg.train.steps} steps" if cfg.soups.train == "sft" else morlhf.rl_text(cfg)
    return f"Rewarded Soups (one LoRA per objective: {per}; deltas mixed by w)"


def work(cfg: Config, n_samples: int | None = None) -> dict[str, float]:
    m = len(cfg.rewards.models)
    n_prefs = len(preferences_from_config(cfg.select.preferences, m))
    if cfg.soups.train == "sft":
        return {"train_samples": m * cfg.train.steps * cfg.train.batch_size, "models": n_prefs}
    return {"grpo_completions": m * cfg.morlhf.steps * cfg.morlhf.batch_size, "train_samples": morlhf.sft_samples(cfg),
            "sft_start_samples": morlhf.sft_samples(cfg), "models": n_prefs}


def several_processes(cfg: Config) -> bool:
    """SFT objectives train on every process; the GRPO variant on the main process alone."""
    return cfg.soups.train == "sft"
