"""Rewarded Soups (Ramé et al., NeurIPS 2023, arXiv 2306.04488): one model per objective, then
for each preference w the models' weights interpolated linearly, theta_w = sum_i w_i theta_i.

Per-objective training is a config choice (`soups.train`): `sft`, fine-tuning on that objective's
top `select.k` training samples for `train.steps` steps (the cheap offline variant), or `grpo`,
RL on that objective's reward alone with the `morlhf` settings (the paper's RL variant).

Every objective's model is a LoRA adapter on the same base W, so theta_i = W + dW_i with
dW_i = s B_i A_i, and the soup is W + sum_i w_i dW_i. We build exactly that with PEFT's
`add_weighted_adapter(..., combination_type="cat")`: it stacks the w_i s A_i and the B_i into one
adapter of rank sum r_i whose product is sum_i w_i s B_i A_i. The `linear` combination would
average A and B separately, giving (sum w_i B_i)(sum w_i A_i): cross terms B_i A_j that no
objective's model contains, so not an interpolation of the models (PEFT's docs call it "a very
rough approximation").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from paretohqd.config import Config
from paretohqd.io import read_table, write_json, write_parquet
from paretohqd.pareto.preferences import preferences_from_config


def objective_dir(root: Path, i: int) -> Path:
    return root / "soups" / f"objective-{i:02d}"


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
    from peft import PeftModel

    from paretohqd.models import load_policy

    base = load_policy(policy.model, dtype=policy.dtype, trust_remote_code=policy.trust_remote_code)
    names = [f"objective-{i:02d}" for i in range(len(adapters))]
    model = PeftModel.from_pretrained(base, str(adapters[0]), adapter_name=names[0])
    for name, folder in zip(names[1:], adapters[1:]):
        model.load_adapter(str(folder), adapter_name=name)
    for w, out in zip(preferences, outs):
        model.add_weighted_adapter(names, [float(x) for x in w], "soup", combination_type="cat")
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        # PEFT saves a non-default adapter into a subfolder named after it
        model.save_pretrained(tmp, selected_adapters=["soup"], safe_serialization=True)
        write_json({"weights": w.tolist(), "adapters": [str(a) for a in adapters], "combination": "cat"},
                   tmp / "soup" / "merge.json")
        shutil.rmtree(out, ignore_errors=True)
        (tmp / "soup").rename(out)
        shutil.rmtree(tmp, ignore_errors=True)
        model.delete_adapter("soup")


def run(cfg: Config, r, tokenizer) -> None:
    """Train each objective's model, then write every preference's soup."""
    from paretohqd.pipeline import _train_preference

    names = list(cfg.rewards.models)
    scores_path = r.path("data", "scores.parquet")
    selection = r.path("soups", "selection.parquet")
    r.step("soups/select", selection,
           lambda: write_parquet(select_top(read_table(scores_path), names, cfg.select.k), selection))
    for i, name in enumerate(names):
        out = objective_dir(r.root, i)
        if cfg.soups.train == "sft":
            fn = lambda i=i, out=out: _train_preference(cfg, tokenizer, scores_path, selection, i, out,  # noqa: E731
                                                        cfg.train.steps, None)
        else:
            from paretohqd.baselines import morlhf

            fn = lambda i=i, out=out: morlhf.train_preference(cfg, tokenizer, r.root, np.eye(len(names))[i],  # noqa: E731
                                                              out, seed=cfg.seed + i)
        r.step(f"soups/objective-{i:02d} {name}", out / "train.json", fn, every_process=cfg.soups.train == "sft")
    prefs = preferences_from_config(cfg.select.preferences, len(names))  # (P, M)
    outs = [r.path("soups", f"pref-{i:02d}") for i in range(len(prefs))]
    r.step("soups/merge", outs[-1] / "merge.json",
           lambda: merge(cfg.policy, [objective_dir(r.root, i) for i in range(len(names))], prefs, outs))


def final_models(cfg: Config, root: Path) -> list[dict]:
    prefs = preferences_from_config(cfg.select.preferences, len(cfg.rewards.models))
    return [{"model": f"pref-{i:02d}", "weights": w, "adapter": root / "soups" / f"pref-{i:02d}",
             "done": root / "soups" / f"pref-{i:02d}" / "merge.json", "tag": None} for i, w in enumerate(prefs)]

