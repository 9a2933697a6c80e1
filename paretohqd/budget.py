"""How long `paretohqd compare` will take: each method's counts of work (its `work(cfg)`) times
measured unit costs.

The counts follow the config exactly (optimizer steps x samples, generated tokens, models
evaluated); the unit costs are measurements of SmolLM2-135M with LoRA on a 2-core Xeon with AMX
(2 cores of an Intel Xeon, 2026-11-29), fitted to the compare-cpu run of that day
(docs/results/compare-cpu-2026-11-29: 81.7 min measured, 82.5 min estimated with these costs).
Every answer is counted at max_new_tokens. Other models or machines: scale the costs (`CostModel`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from paretohqd.config import Config
from paretohqd.methods import METHODS, REFERENCE, configure, module


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
    dpo_pair_s: float = 3.3
    """Seconds per MODPO pair per optimizer step: the policy's forward + backward and the reference's
    forward on both answers, ~2.7 SFT samples (2 x (1 + 1/3), a forward costing a third of forward +
    backward). `benchmarks/bench_modpo.py` measured 2.78 SFT samples a pair on a tiny random Llama
    (busy machine) and 3.19 with SmolLM2, 4 pairs a step, quiet (2026-12-01, 2-core Xeon without
    AMX); 2.78 x `sft_sample_s` is kept, the compare-cpu estimate of 2026-12-01 being made with it."""
    run_overhead_s: float = 30.0
    """Per run: loading models, scoring with the reward heads, writing the report."""


H100_LLAMA2_7B = CostModel(
    sft_sample_s=0.06,
    generated_token_s=1 / 1500,
    grpo_completion_s=0.5,
    dpo_pair_s=0.15,
    run_overhead_s=600.0,
)
"""An *assumed*, not measured, cost model for Llama-2 7B in bf16 with LoRA on one H100-class GPU
(nobody has run the paper configs on a GPU with this code yet):
- SFT: ~6 x 7e9 FLOPs per token at ~30% of the H100's 990 dense bf16 TFLOP/s is ~7,000 tokens/s;
  an HH sample is ~300 tokens plus padding, so ~0.06 s per sample per step, loading amortised;
- generation with HF `generate` at batch 64: ~1,500 new tokens/s (decoding is memory-bound, far
  below vLLM's rate);
- MODPO: two answers per pair, each a forward + backward and a reference forward, ~2.5 SFT samples;
- per run: loading the 7B model and scoring with two GPT-2-large reward models, ~10 minutes.
Replace these figures with measured ones before planning a cluster budget."""


def step_seconds(cfg: Config, costs: CostModel) -> dict[str, float]:
    """Estimated seconds of one ParetoHqD step of each kind under `cfg` (one device): a stage-1 or
    stage-2 training step (one preference's whole fine-tuning), one representative's stage-2
    generation, one model's evaluation answers, and the whole run on one device."""
    sub = configure(cfg, "paretohqd")
    w = module(sub).work(sub)
    per_rep = cfg.stage2.prompts / (1 if cfg.stage2.prompts_per == "model" else max(w["generators"], 1))
    eval_model = cfg.evaluate.prompts * cfg.generate.max_new_tokens * costs.generated_token_s
    return {"stage1 training, per preference": cfg.train.steps * cfg.train.batch_size * costs.sft_sample_s,
            "stage2 generation, per representative": per_rep * cfg.generate.max_new_tokens * costs.generated_token_s,
            "stage2 training, per preference": cfg.stage2.steps * cfg.train.batch_size * costs.sft_sample_s,
            "evaluation, per model": eval_model,
            "whole run": (costs.run_overhead_s + w["train_samples"] * costs.sft_sample_s
                          + w["generated_tokens"] * costs.generated_token_s + (w["models"] + 1) * eval_model)}


def estimate_seconds(cfg: Config, costs: CostModel = CostModel(), n_samples: int | None = None) -> dict[str, float]:
    """Estimated seconds per method of `cfg.compare.methods`, in order (plus the base model's
    answers once, with the first run). `n_samples` (the scored training set's size, known once the
    data is prepared) is needed by `full-data-epochs` and `modpo.epochs` only: NaN for them without.
    The SFT start (`methods.start`) is counted for the first method that trains it: `compare` links it
    into the others."""
    out = {}
    grpo_tokens = cfg.morlhf.max_completion_length or cfg.generate.max_new_tokens
    sft_trained = False  # whether an earlier method trains the SFT start (`methods.start`)
    for i, method in enumerate(cfg.compare.methods):
        sub = configure(cfg, method)
        w = module(sub).work(sub, n_samples)
        train = w.get("train_samples", 0)
        if METHODS[method].shares_stage1_of in cfg.compare.methods[:i]:
            train -= w.get("stage1_samples", 0)  # `compare` shares that method's stage-1 models
        if sft_trained:
            train -= w.get("sft_start_samples", 0)  # and the SFT start, trained once
        sft_trained = sft_trained or w.get("sft_start_samples", 0) > 0
        generated = w.get("generated_tokens", 0) + w["models"] * cfg.evaluate.prompts * cfg.generate.max_new_tokens
        out[method] = (costs.run_overhead_s + train * costs.sft_sample_s + generated * costs.generated_token_s
                       + w.get("grpo_completions", 0) * costs.grpo_completion_s * grpo_tokens / 64
                       + w.get("dpo_pairs", 0) * costs.dpo_pair_s)
    first = cfg.compare.methods[0]
    out[first] += cfg.evaluate.prompts * cfg.generate.max_new_tokens * costs.generated_token_s
    return out


PAPER_GPU_HOURS: dict[str, tuple[float, str]] = {
    "paretohqd": (55.87, "its GPU-time table"),
    "rewarded-soups": (923.68, "its GPU-time table"),
    "morlhf": (2272.84, "its GPU-time table (5 preferences)"),
    "ric": (55.87 / 0.42, "derived: the paper says ParetoHqD takes about 42% of RiC's GPU time"),
}
"""GPU hours the ParetoHqD paper (arXiv 2504.16628) reports per method, with where the number comes
from; a method it gives none for is absent (shown as "-")."""


@dataclass(frozen=True)
class BudgetRow:
    method: str
    hours: float
    """Estimated device hours (`estimate_seconds` under the cost model); NaN where the work is not known yet."""
    vs_reference: float
    """`hours` over the reference method's (ParetoHqD's) estimate."""
    paper_hours: float | None
    """The paper's GPU hours (`PAPER_GPU_HOURS`), None where it reports none."""
    paper_vs_reference: float | None
    """`paper_hours` over the paper's ParetoHqD hours."""
    paper_source: str | None


def budget_table(cfg: Config, costs: CostModel = H100_LLAMA2_7B, n_samples: int | None = None) -> list[BudgetRow]:
    """Each method of `cfg.compare.methods`: its estimated device hours under `costs` and the ratio to
    ParetoHqD's, beside the paper's GPU hours and ratio, so that a user sees before paying whether
    the comparison has the paper's proportions.

    Examples:
        >>> rows = budget_table(Config(compare={"methods": ["paretohqd", "morlhf", "modpo"]}))
        >>> [(r.method, round(r.vs_reference, 2), r.paper_hours) for r in rows][::2]
        [('paretohqd', 1.0, 55.87), ('modpo', 0.63, None)]
    """
    if REFERENCE not in cfg.compare.methods:
        cfg = cfg.model_copy(update={"compare": cfg.compare.model_copy(
            update={"methods": [REFERENCE, *cfg.compare.methods]})})
    hours = {m: s / 3600 for m, s in estimate_seconds(cfg, costs, n_samples).items()}
    paper_ref = PAPER_GPU_HOURS[REFERENCE][0]
    rows = []
    for method, h in hours.items():
        paper = PAPER_GPU_HOURS.get(method)
        rows.append(BudgetRow(method, h, h / hours[REFERENCE], paper and paper[0],
                              paper and paper[0] / paper_ref, paper and paper[1]))
    return rows


def budget_markdown(rows: list[BudgetRow]) -> str:
    """`budget_table`'s rows as a markdown table (derived paper figures marked with `~`)."""

    def num(x: float | None, fmt: str, mark: str = "", unit: str = "") -> str:
        return "-" if x is None or not math.isfinite(x) else f"{mark}{x:{fmt}}{unit}"

    lines = ["| method | estimated device h | vs ParetoHqD | paper GPU h | paper vs ParetoHqD |",
             "|---|---|---|---|---|"]
    for r in rows:
        mark = "~" if r.paper_source and r.paper_source.startswith("derived") else ""
        lines.append(f"| {r.method} | {num(r.hours, ',.1f')} | {num(r.vs_reference, '.2f', unit='x')} | "
                     f"{num(r.paper_hours, ',.1f', mark)} | {num(r.paper_vs_reference, '.2f', mark, 'x')} |")
    return "\n".join(lines)
