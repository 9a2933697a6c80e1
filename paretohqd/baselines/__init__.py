"""The baselines of the paper's table, run in ParetoHqD's harness (same data, reward models,
held-out prompts, hypervolume box and compute accounting): RiC, Rewarded Soups and MORLHF.

`pipeline.run` prepares and scores the data, then calls `train` here when `method` names a
baseline; `final_models` lists what `evaluate` answers with. ParetoHqD's own ablations
(`stage1-only`, `scalarised`, `full-data`) are settings of the pipeline itself.
"""

from __future__ import annotations

from pathlib import Path

from paretohqd.config import Config

BASELINES = ("ric", "rewarded-soups", "morlhf")


def train(cfg: Config, r, tokenizer) -> None:
    """Every training step of the baseline `cfg.method`, recorded in the run's manifest."""
    from paretohqd.baselines import morlhf, ric, soups

    if cfg.method == "ric":
        out = r.path("ric", "model")
        r.step("ric/train", out / "train.json",
               lambda: ric.train(cfg, tokenizer, r.path("data", "scores.parquet"), out), every_process=True)
    elif cfg.method == "rewarded-soups":
        soups.run(cfg, r, tokenizer)
    elif cfg.method == "morlhf":
        morlhf.run(cfg, r, tokenizer)
    else:
        raise ValueError(f"{cfg.method!r} is not a baseline; baselines are {BASELINES}")


def final_models(cfg: Config, root: Path) -> list[dict]:
    """Per preference: model name, weights, adapter folder, done marker, and RiC's prompt tag."""
    from paretohqd.baselines import morlhf, ric, soups

    return {"ric": ric, "rewarded-soups": soups, "morlhf": morlhf}[cfg.method].final_models(cfg, root)


def describe(cfg: Config) -> str:
    """One line naming the baseline and its budget."""
    from paretohqd.baselines import morlhf, ric

    m = cfg.morlhf
    rl = f"GRPO, {m.steps} steps x {m.batch_size} completions, beta {m.beta}"
    if cfg.method == "ric":
        return f"RiC (one model, rewards in the prompt, {cfg.ric.mapping} mapping, {ric.steps(cfg)} steps)"
    if cfg.method == "rewarded-soups":
        per = f"SFT on top-{cfg.select.k}, {cfg.train.steps} steps" if cfg.soups.train == "sft" else rl
        return f"Rewarded Soups (one LoRA per objective: {per}; deltas mixed by w)"
    return f"MORLHF ({rl}, on w.r for {len(morlhf.preferences(cfg))} preferences)"
