"""`paretohqd compare` end to end: every method trains and evaluates on a tiny random Llama.

One module-scoped compare run (the shipped configs/compare-cpu.yaml with a minimal budget) serves
every test here: seven runs on the same 80 real HH rows, MiniLM reward heads trained on them.
Stage 2 is off to keep the suite fast (test_pipeline runs it; `full-data`'s stage-2 selection is
the function unit-tested in test_baselines_units).
"""

import json

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from paretohqd import budget, compare
from paretohqd.cli import app
from paretohqd.config import ConfigError, load_config
from paretohqd.methods import METHODS as REGISTRY
from paretohqd.methods import ric
from paretohqd.runfolder import RunFolder
from paretohqd.pareto.layers import nondominated_layers
from paretohqd.pareto.metrics import hypervolume

METHODS = tuple(REGISTRY)  # every method, in configs/compare-cpu.yaml's order where it has them

NAME = "t"
N_PREFS, N_PROMPTS = 2, 3
MORLHF_PREFS = [[0.3, 0.7]]  # an explicit subset, not the grid


@pytest.fixture(scope="module")
def compared(tmp_path_factory, small_hh, tiny_policy):
    runs = tmp_path_factory.mktemp("compare") / "runs"
    sets = [f"name={NAME}", f"runs_dir={runs}", f"data.sources=[{small_hh}]", f"policy.model={tiny_policy}",
            f"rewards.dir={tmp_path_factory.getbasetemp() / 'rewards'}", "rewards.epochs=3",
            f"select.preferences={N_PREFS}", "select.k=4", "train.steps=2", "train.batch_size=2",
            "train.warmup_steps=0", "stage2.enabled=false", f"evaluate.prompts={N_PROMPTS}",
            "evaluate.bootstrap=20", "generate.max_new_tokens=8", "generate.batch_size=4", "ric.steps=3",
            f"morlhf.preferences={MORLHF_PREFS}", "morlhf.steps=1", "morlhf.batch_size=4", "morlhf.num_generations=2",
            "morlhf.lr=1e-3", "sft_start.steps=2", "ric.online_prompts=6", "ric.online_origin=4", "ric.online_steps=2",
            "modpo.steps=2",
            f"compare.methods=[{', '.join(METHODS)}]"]
    args = ["compare", "configs/compare-cpu.yaml"]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return runs


def _lora_b(folder) -> list:
    weights = load_file(folder / "adapter_model.safetensors")
    return [t for k, t in weights.items() if "lora_B" in k]


def test_compare_writes_one_table_and_one_plot(compared):
    out = compared / f"{NAME}-compare"
    rows = json.loads((out / "compare.json").read_text())["methods"]
    assert [r["method"] for r in rows] == list(METHODS)
    by = {r["method"]: r for r in rows}
    assert by["paretohqd"]["relative_compute"] == 1.0
    box = json.loads((compared / f"{NAME}-paretohqd" / "evaluate" / "bounds.json").read_text())
    for r in rows:
        # each number recomputed from the run's own answers
        df = pd.read_parquet(compared / f"{NAME}-{r['method']}" / "evaluate" / "responses.parquet")
        tuned = df[df["model"] != "base"]
        assert r["collapse_rate"] == pytest.approx(tuned["collapse"].notna().mean())
        means = tuned.groupby("model")[["helpful", "harmless"]].mean().to_numpy()
        assert r["hypervolume"] == pytest.approx(hypervolume(means, lower=box["lower"], upper=box["upper"]))
        assert r["compute_device_h"] > 0
        assert r["relative_compute"] == pytest.approx(r["compute_device_h"] / by["paretohqd"]["compute_device_h"])
    # every method answered the same prompts, so each gets a paired difference to ParetoHqD
    for r in rows[1:]:
        d = r["hypervolume_vs_first"]
        assert d["vs"] == f"{NAME}-paretohqd" and d["delta"] == pytest.approx(r["hypervolume"] - rows[0]["hypervolume"])
        assert d["ci95"][0] <= d["ci95"][1]
    report = json.loads((out / "report.json").read_text())
    assert [m["method"] for m in report["methods"]] == [f"{NAME}-{m}" for m in METHODS]
    assert (out / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "compare.md").read_text()
    assert all(f"| {m} |" in table for m in METHODS) and "| HV - first [95%] |" in table
    # controllability in the fronts box with paired differences to ParetoHqD, and the change from the
    # base; MORLHF trains one preference here: no neighbours, no hole, no order
    assert "## Controllability and distance to the best front" in table and "## Change from the base model" in table
    # (a tiny random policy may give every model of a method one mean at the fronts box's ideal point:
    # no direction there, calibration undefined, None)
    first = rows[0]["control"]["calibration_deg"]["value"]
    for r in rows:
        assert r["control"]["box"] == "fronts" and set(r["change_vs_base"]) == {"helpful", "harmless"}
        value = r["control"]["calibration_deg"]["value"]
        assert value is None or 0 <= value <= 180
        if r is not rows[0] and None not in (value, first):
            assert r["control"]["calibration_deg"]["vs_first"]["vs"] == f"{NAME}-paretohqd"
    assert all(by[m]["control"]["largest_hole"]["value"] is None for m in METHODS if m.startswith("morlhf"))
    assert by["paretohqd"]["control"]["largest_hole"]["value"] is not None
    # every run is measured in the first run's box
    first = json.loads((compared / f"{NAME}-paretohqd" / "evaluate" / "bounds.json").read_text())
    assert report["bounds"]["lower"] == first["lower"] and report["bounds"]["upper"] == first["upper"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_answers_the_same_heldout_prompts(compared, method):
    root = compared / f"{NAME}-{method}"
    df = pd.read_parquet(root / "evaluate" / "responses.parquet")
    n_models = len(MORLHF_PREFS) if method.startswith("morlhf") else N_PREFS
    assert sorted(df["model"].unique()) == ["base"] + [f"pref-{i:02d}" for i in range(n_models)]
    assert df.groupby("model").size().eq(N_PROMPTS).all()
    first = pd.read_parquet(compared / f"{NAME}-paretohqd" / "data" / "heldout.parquet")
    assert set(df["prompt_id"]) == set(first["prompt_id"].head(N_PROMPTS))
    assert df[["helpful", "harmless"]].notna().all().all()
    meta = json.loads((root / "evaluate" / "meta.json").read_text())
    assert meta["variant"] == method and len(meta["preferences"]) == n_models


def test_runs_share_data_and_charge_its_compute(compared):
    first = compared / f"{NAME}-paretohqd"
    for method in METHODS[1:]:
        root = compared / f"{NAME}-{method}"
        for rel in ("data/train.parquet", "data/scores.parquet", "evaluate/bounds.json"):
            assert (root / rel).read_bytes() == (first / rel).read_bytes()
        steps = json.loads((root / "manifest.json").read_text())["steps"]
        assert steps["score"]["shared_from"] == str(first)
    stage1_only = json.loads((compared / f"{NAME}-stage1-only" / "manifest.json").read_text())["steps"]
    shared = [n for n, s in stage1_only.items() if n.startswith("stage1/") and s.get("shared_from") == str(first)]
    assert len(shared) == N_PREFS and not any(n.startswith("stage2") for n in stage1_only)


def test_ablations_change_what_they_should(compared):
    sel = {m: pd.read_parquet(compared / f"{NAME}-{m}" / "stage1" / "selection.parquet")
           for m in ("paretohqd", "scalarised", "full-data")}
    info = json.loads((compared / f"{NAME}-scalarised" / "stage1" / "selection.json").read_text())
    assert info["method"] == "scalarised"
    # scalarised is the top k of w . z over the same Pareto pool (an independent recomputation)
    scores = pd.read_parquet(compared / f"{NAME}-scalarised" / "data" / "scores.parquet")
    pts = scores[["helpful", "harmless"]].to_numpy()
    pool = np.flatnonzero(nondominated_layers(pts) < info["layers_used"])
    z = (pts - info["lower"]) / (np.array(info["upper"]) - info["lower"])  # (N, 2)
    for _, chosen in sel["scalarised"].groupby("preference_index"):
        w = np.array(chosen["weights"].iloc[0])
        top = pool[np.argsort(-(z[pool] @ w), kind="stable")[:len(chosen)]]
        assert set(chosen["id"]) == set(scores["id"].to_numpy()[top])
    assert (sel["full-data"]["layer"] == -1).all()
    # full-data draws as many samples as 2 steps x batch 2 reach, from the whole table
    assert sel["full-data"].groupby("preference_index").size().eq(4).all()
    # the ablations' selections differ from ParetoHqD's (scalarised: top of w . z; full-data: random)
    assert set(sel["full-data"]["id"]) != set(sel["paretohqd"]["id"])
    assert not (compared / f"{NAME}-stage1-only" / "stage2").exists()


def test_full_data_epochs_trains_on_everything_for_paretohqds_epochs(compared):
    root = compared / f"{NAME}-full-data-epochs"
    n = len(pd.read_parquet(root / "data" / "scores.parquet"))
    sel = pd.read_parquet(root / "stage1" / "selection.parquet")
    assert sel.groupby("preference_index")["id"].nunique().eq(n).all()  # every sample, once per preference
    # ParetoHqD: 2 steps x batch 2 over k = 4 samples is 1 epoch; so n samples take n / 2 steps of 2
    trained = json.loads((root / "stage1" / "pref-00" / "train.json").read_text())
    assert trained["steps"] == -(-n // 2) and trained["samples"] == 2 * trained["steps"]


def test_ric_online_round_trains_on_its_best_answers_from_the_offline_model(compared):
    root = compared / f"{NAME}-ric"
    gen = pd.read_parquet(root / "ric" / "online-1" / "generated.parquet")
    assert 0 < len(gen) <= 6 and set(gen["prompt"]) <= set(pd.read_parquet(root / "data" / "train.parquet")["prompt"])
    online = json.loads((root / "ric" / "online-1" / "model" / "train.json").read_text())
    assert online["steps"] == 2
    stats = json.loads((root / "ric" / "rewards.json").read_text())
    assert stats["lo"] and (root / "ric" / "online-1" / "scores.parquet").exists()
    # the evaluated model is the last round's
    cfg = load_config(root / "config.yaml", [f"runs_dir={compared}"])
    assert {m.adapter for m in ric.final_models(RunFolder(cfg, root))} == {root / "ric" / "online-1" / "model"}
    assert "1 online round" in json.loads((root / "evaluate" / "meta.json").read_text())["description"]


def test_ric_one_model_with_a_tag_per_preference(compared):
    root = compared / f"{NAME}-ric"
    trained = json.loads((root / "ric" / "model" / "train.json").read_text())
    assert trained["steps"] == 3 and trained["samples"] == 6  # 3 steps x batch 2
    assert any(t.abs().sum() > 0 for t in _lora_b(root / "ric" / "model"))  # B starts at 0: it trained
    tags = json.loads((root / "evaluate" / "meta.json").read_text())["tags"]
    stats = json.loads((root / "ric" / "rewards.json").read_text())
    # w = (0, 1): helpful at its lowest, harmless at its highest; w = (1, 0) the other way round
    assert tags[0] == f"<helpful_score> {stats['lo'][0]:.1f} <harmless_score> {stats['hi'][1]:.1f}"
    assert tags[-1] == f"<helpful_score> {stats['hi'][0]:.1f} <harmless_score> {stats['lo'][1]:.1f}"


def test_soups_mix_one_model_per_objective(compared):
    root = compared / f"{NAME}-rewarded-soups"
    steps = json.loads((root / "manifest.json").read_text())["steps"]
    assert {"soups/select", "soups/merge"} <= set(steps)
    objectives = [root / "soups" / f"objective-{i:02d}" for i in range(2)]
    sel = pd.read_parquet(root / "soups" / "selection.parquet")
    scores = pd.read_parquet(root / "data" / "scores.parquet").set_index("id")
    top_helpful = sel.loc[sel["preference_index"] == 0, "id"]
    assert scores.loc[top_helpful, "helpful"].min() >= scores["helpful"].nlargest(4).min()
    soup = json.loads((root / "soups" / "pref-01" / "merge.json").read_text())
    assert soup["weights"] == [1.0, 0.0] and soup["combination"] == "cat"
    rank = [json.loads((f / "adapter_config.json").read_text())["r"] for f in [*objectives, root / "soups" / "pref-01"]]
    assert rank == [32, 32, 64]  # each objective SFT + RL (16 + 16), the soup one block per objective
    assert all((o / "adapter_model.safetensors").exists() for o in objectives)


@pytest.mark.parametrize("method, aggregation", [("morlhf", "sum_then_normalize"), ("morlhf-gdpo", "normalize_then_sum")])
def test_morlhf_trains_configured_preferences_with_grpo_from_sft(compared, method, aggregation):
    root = compared / f"{NAME}-{method}"
    trained = json.loads((root / "morlhf" / "pref-00" / "train.json").read_text())
    assert trained["weights"] == MORLHF_PREFS[0] and trained["steps"] == 1
    assert trained["aggregation"] == aggregation and trained["init"] == str(root / "sft")
    assert np.isfinite(trained["reward_last"])
    assert not (root / "morlhf" / "pref-01").exists()
    # the saved model is the SFT adapter plus the RL one, summed exactly: rank 16 + 16, and its
    # first block is the SFT adapter's B (the RL block is B_rl, which starts at 0 and trained)
    merged = json.loads((root / "morlhf" / "pref-00" / "merge.json").read_text())
    assert merged["weights"] == [1.0, 1.0] and merged["adapters"][0] == str(root / "sft")
    assert json.loads((root / "morlhf" / "pref-00" / "adapter_config.json").read_text())["r"] == 32
    sft, both = _lora_b(root / "sft"), _lora_b(root / "morlhf" / "pref-00")
    assert all(np.allclose(b[:, :16].numpy(), s.numpy()) for s, b in zip(sft, both))
    assert any(b[:, 16:].abs().sum() > 0 for b in both)
    chosen = json.loads((root / "sft" / "train.json").read_text())
    assert chosen["steps"] == 2


def test_the_sft_start_is_trained_once_and_shared(compared):
    """Rewarded Soups' RL (the first of them) trains the SFT start; MORLHF, MORLHF-GDPO and MODPO
    (`modpo.init: sft`) get the same files linked in."""
    first = compared / f"{NAME}-rewarded-soups"
    assert "shared_from" not in json.loads((first / "manifest.json").read_text())["steps"]["sft"]
    for method in ("morlhf", "morlhf-gdpo", "modpo"):
        root = compared / f"{NAME}-{method}"
        assert json.loads((root / "manifest.json").read_text())["steps"]["sft"]["shared_from"] == str(first)
        for f in (first / "sft").iterdir():
            assert (root / "sft" / f.name).stat().st_ino == f.stat().st_ino  # one model, linked


def test_method_config_names_runs_and_sets_implied_keys():
    cfg = load_config("configs/compare-cpu.yaml")
    sub = compare.method_config(cfg, "stage1-only")
    assert sub.name == "cpu-stage1-only" and sub.method == "stage1-only" and not sub.stage2.enabled
    assert compare.method_config(cfg, "ric").stage2.enabled  # other methods keep the config's values
    with pytest.raises(ConfigError, match="leave `method` unset"):
        compare.compare(load_config("configs/compare-cpu.yaml", ["method=ric"]))
    with pytest.raises(ConfigError, match="'dpo' is not a method"):
        compare.compare(load_config("configs/compare-cpu.yaml", ["compare.methods=[paretohqd, dpo]"]))


def test_compare_cpu_fits_two_hours_on_this_machine():
    cfg = load_config("configs/compare-cpu.yaml")
    seconds = budget.estimate_seconds(cfg)
    assert list(seconds) == cfg.compare.methods
    assert sum(seconds.values()) <= 2 * 3600, seconds
    # the estimate counts work: sharing stage 1 makes stage1-only the cheapest run
    assert min(seconds, key=seconds.get) == "stage1-only"


def test_sft_start_is_linked_where_it_is_used_with_the_same_settings(tmp_path):
    """`compare` links an earlier run's SFT start (files and manifest entry) into a later run that starts
    from one with the same deciding settings; not into one that does not use it, nor one whose
    `sft_start` differs (no models trained here: the donor's files are stand-ins)."""
    from paretohqd import methods

    def run(method: str, *sets: str) -> RunFolder:
        sub = compare.method_config(load_config(None, [f"runs_dir={tmp_path}", "name=x", *sets]), method)
        return RunFolder(sub, free=methods.unread_sections(sub))

    donor = run("morlhf")
    (donor.root / "sft").mkdir()
    for name in ("adapter_model.safetensors", "train.json"):
        (donor.root / "sft" / name).write_text(name)
    donor.record("sft", {"wall_s": 1.0})
    roots, subs = {"morlhf": donor.root}, {"morlhf": donor.cfg}
    modpo_run = run("modpo")
    compare._share_sft_start(roots, subs, modpo_run)
    assert (modpo_run.root / "sft" / "train.json").stat().st_ino == (donor.root / "sft" / "train.json").stat().st_ino
    assert modpo_run.manifest["steps"]["sft"]["shared_from"] == str(donor.root)
    for other in (run("modpo", "modpo.init=base", "name=y"), run("paretohqd", "name=z"),
                  run("modpo", "sft_start.steps=3", "name=w")):
        compare._share_sft_start(roots, subs, other)
        assert not (other.root / "sft").exists() and "sft" not in other.manifest["steps"]
