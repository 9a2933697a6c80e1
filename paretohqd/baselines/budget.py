"""How long `paretohqd compare` will take: counts of work per method times measured unit costs.

The counts follow the config exactly (optimizer steps x samples, generated tokens, models
evaluated); the unit costs are measurements of SmolLM2-135M with LoRA on this workplace's machine
(2 cores of an Intel Xeon, 2026-11-29), fitted to the compare-cpu run of that day
(docs/results/compare-cpu-2026-11-29: 81.7 min measured, 82.5 min estimated with these costs).
Every answer is counted at max_new_tokens. Other models or machines: scale the costs (`CostModel`).
"""

from __future__ import annotations

from dataclasses import dataclass

from paretohqd.config import Config
from paretohqd.pareto.preferences import preferences_from_config


@dataclass(frozen=True)
class CostModel:
    sft_sample_s: float = 1.2
    """Seconds per training sample per optimizer step (forward + backward), model loading included
    (measured: 0.96 for ParetoHqD's stage 1, 1.7 for RiC, whose random samples run longer)."""
    generated_token_s: float = 1 / 46
    """Seconds per generated token, batched (evaluation measured 156-196 s per 5 x 24 x 64 tokens)."""
    grpo_completion_s: float = 4.5
    """Seconds per GRPO completion at 64 new tokens: sampling, both forward passes and the backward
    (measured: 31-48 s per step of 8 completions, TRL 1.16, fp32, quiet machine; runs that shared
    the cores with other training measured 245-314 s)."""
    run_overhead_s: float = 30.0
    """Per run: loading models, scoring with the reward heads, writing the report."""


def work(cfg: Config, method: str, *, shares_stage1: bool = False) -> dict[str, float]:
    """Work one method's run does: samples x steps trained, tokens generated, GRPO completions."""
    from paretohqd.baselines import morlhf, ric
    from paretohqd.pipeline import representatives  # stage 2's generators

    m = len(cfg.rewards.models)
    prefs = preferences_from_config(cfg.select.preferences, m)
    n_prefs = len(prefs)
    batch, gen = cfg.train.batch_size, cfg.generate.max_new_tokens
    train = generated = grpo = 0.0
    if method in ("paretohqd", "scalarised", "full-data", "stage1-only"):
        train += 0 if shares_stage1 else n_prefs * cfg.train.steps * batch
        if method != "stage1-only" and cfg.stage2.enabled:
            generated += len(representatives(prefs)) * cfg.stage2.prompts * gen
            train += n_prefs * cfg.stage2.steps * batch
    elif method == "ric":
        train += ric.steps(cfg) * batch
    elif method == "rewarded-soups":
        if cfg.soups.train == "sft":
            train += m * cfg.train.steps * batch
        else:
            grpo += m * cfg.morlhf.steps * cfg.morlhf.batch_size
    n_models = len(morlhf.preferences(cfg)) if method == "morlhf" else n_prefs
    if method == "morlhf":
        grpo += n_models * cfg.morlhf.steps * cfg.morlhf.batch_size
    generated += n_models * cfg.evaluate.prompts * gen
    return {"train_samples": train, "generated_tokens": generated, "grpo_completions": grpo}


def estimate_seconds(cfg: Config, costs: CostModel = CostModel()) -> dict[str, float]:
    """Estimated seconds per method of `cfg.compare.methods`, in order (plus the base model's
    answers once, with the first run)."""
    out = {}
    grpo_tokens = cfg.morlhf.max_completion_length or cfg.generate.max_new_tokens
    for i, method in enumerate(cfg.compare.methods):
        w = work(cfg, method, shares_stage1=method == "stage1-only" and "paretohqd" in cfg.compare.methods[:i])
        out[method] = (costs.run_overhead_s + w["train_samples"] * costs.sft_sample_s
                       + w["generated_tokens"] * costs.generated_token_s
                       + w["grpo_completions"] * costs.grpo_completion_s * grpo_tokens / 64)
    first = cfg.compare.methods[0]
    out[first] += cfg.evaluate.prompts * cfg.generate.max_new_tokens * costs.generated_token_s
    return out
