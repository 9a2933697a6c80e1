"""The budget table (`compare --estimate`): each method's estimated device hours at a config beside
the paper's reported GPU hours, and both ratios to ParetoHqD; every number from `budget.py`."""

import math

import pytest
from typer.testing import CliRunner

from paretohqd import budget
from paretohqd.cli import app
from paretohqd.config import load_config

PAPER_CONFIGS = ["configs/paper-hh-2obj.yaml", "configs/paper-hh-3obj.yaml"]


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_table_is_the_estimate_beside_the_papers_hours(config):
    cfg = load_config(config)
    rows = budget.budget_table(cfg, budget.H100_LLAMA2_7B)
    seconds = budget.estimate_seconds(cfg, budget.H100_LLAMA2_7B)
    assert [r.method for r in rows] == cfg.compare.methods == list(seconds)
    ref = seconds["paretohqd"]
    paper_ref = budget.PAPER_GPU_HOURS["paretohqd"][0]
    for r in rows:
        if math.isnan(seconds[r.method]):  # full-data-epochs and modpo.epochs: need the scored data's size
            assert math.isnan(r.hours)
            continue
        assert r.hours == pytest.approx(seconds[r.method] / 3600) and r.vs_reference == pytest.approx(seconds[r.method] / ref)
        paper = budget.PAPER_GPU_HOURS.get(r.method)
        assert r.paper_hours == (paper and paper[0])
        assert r.paper_vs_reference == (paper and pytest.approx(paper[0] / paper_ref))
    by_method = {r.method: r for r in rows}
    assert by_method["modpo"].paper_hours is None  # the paper reports none: "-"
    # the paper's proportions this harness is meant to keep: every RL baseline costs more than ParetoHqD
    assert min(by_method[m].vs_reference for m in ("ric", "rewarded-soups", "morlhf")) > 1


def test_markdown_marks_missing_and_derived_figures():
    cfg = load_config("configs/paper-hh-2obj.yaml")
    rows = budget.budget_table(cfg, budget.H100_LLAMA2_7B, n_samples=100_000)
    lines = {line.split(" | ")[0].lstrip("| "): line for line in budget.budget_markdown(rows).splitlines()[2:]}
    modpo, ric = (next(r for r in rows if r.method == m) for m in ("modpo", "ric"))
    assert lines["modpo"] == f"| modpo | {modpo.hours:,.1f} | {modpo.vs_reference:.2f}x | - | - |"
    assert lines["ric"].endswith(f"| ~{ric.paper_hours:,.1f} | ~{ric.paper_vs_reference:.2f}x |")  # derived from "42%"
    assert "| - |" not in lines["full-data-epochs"].split(" | ", 2)[1]  # known with the data's size


def test_reference_method_is_added_when_compare_leaves_it_out():
    cfg = load_config(None, ["compare.methods=[modpo]"])
    assert [r.method for r in budget.budget_table(cfg)] == ["paretohqd", "modpo"]


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_compare_estimate_prints_the_table(config):
    res = CliRunner().invoke(app, ["compare", config, "--estimate"])
    assert res.exit_code == 0, res.output
    table = budget.budget_markdown(budget.budget_table(load_config(config), budget.H100_LLAMA2_7B))
    assert table in res.output and "Traceback" not in res.output


def test_modpo_epochs_set_its_steps_from_the_pairs():
    """modpo.epochs: ceil(epochs x pairs / batch) steps a preference; the pairs counted as n_samples / 2
    (an upper bound) in the estimate, unknown (NaN) before the data is scored."""
    from paretohqd.methods import configure, modpo

    cfg = configure(load_config(None, ["modpo.epochs=2.5", "modpo.batch_size=4", "modpo.init=base",
                                       "select.preferences=3"]), "modpo")
    assert modpo._budget(cfg, 10) == (7, 4)  # ceil(2.5 x 10 / 4) = ceil(6.25)
    assert modpo.work(cfg, 20) == {"dpo_pairs": 3 * 7 * 4, "train_samples": 0, "sft_start_samples": 0, "models": 3}
    assert math.isnan(modpo.work(cfg)["dpo_pairs"])
    fixed = configure(load_config(None, ["modpo.steps=5", "modpo.batch_size=4", "select.preferences=3"]), "modpo")
    assert modpo._budget(fixed, 10) == (5, 4) and modpo.work(fixed, 20)["dpo_pairs"] == 3 * 5 * 4


def test_the_sft_start_is_estimated_once_per_comparison():
    """MORLHF trains the SFT start; MODPO after it in the same comparison gets it linked in, so its
    estimate lacks exactly those samples, and alone it pays for them."""
    costs = budget.CostModel()
    both = budget.estimate_seconds(load_config(None, ["compare.methods=[morlhf, modpo]", "sft_start.steps=30"]))
    alone = budget.estimate_seconds(load_config(None, ["compare.methods=[modpo]", "sft_start.steps=30"]))
    sft = 30 * load_config(None).train.batch_size * costs.sft_sample_s
    evaluation = load_config(None).evaluate.prompts * load_config(None).generate.max_new_tokens * costs.generated_token_s
    assert both["modpo"] == pytest.approx(alone["modpo"] - evaluation - sft)  # (the base's answers go with the first)
    base = budget.estimate_seconds(load_config(None, ["compare.methods=[morlhf, modpo]", "modpo.init=base"]))
    assert base["modpo"] == pytest.approx(alone["modpo"] - evaluation - sft)  # init base: no SFT at all
