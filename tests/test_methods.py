"""The methods' parts: the registry and the settings a method implies, RiC's prompt format and
preference mapping, the soup's exact mix, Rewarded Soups' top-k, ParetoHqD's stage-2 generators."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from paretohqd.config import ConfigError, PolicyConfig, TrainConfig, load_config
from paretohqd.methods import METHODS, configure, paretohqd, ric, soups
from paretohqd.policy.prompts import with_tag

# RiC -----------------------------------------------------------------------------------------------


def test_reward_tag_and_where_it_goes():
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Say no politely?"}]
    before = json.dumps(messages)
    tag = ric.reward_tag(["helpful", "harmless"], [0.73, -0.449])
    assert tag == "<helpful_score> 0.7 <harmless_score> -0.4"
    out = with_tag(messages, tag)
    assert out[:2] == messages[:2]  # earlier turns untouched: the tag sits where RiC's does, before the answer
    assert out[2]["content"] == "Say no politely?\n\n<helpful_score> 0.7 <harmless_score> -0.4"
    assert json.dumps(messages) == before  # the input is not mutated


def test_desired_rewards_follow_rics_mappings():
    """lo = (-2, -1, 0), hi = (2, 3, 4), M = 3, w = (0.1, 0.3, 0.6).
    linf: objective 3 has the largest weight -> hi = 4; objective 1: min(3 * 0.1, 1) = 0.3 of the
    way: -2 + 0.3 * 4 = -0.8; objective 2: 0.9 of the way: -1 + 0.9 * 4 = 2.6.
    linear: -2 + 0.4 = -1.6, -1 + 1.2 = 0.2, 0 + 2.4 = 2.4.
    l2: ||w|| = sqrt(0.46) = 0.6782; fractions 0.1474, 0.4423, 0.8847 -> -1.4, 0.8, 3.5."""
    w, lo, hi = [0.1, 0.3, 0.6], [-2.0, -1.0, 0.0], [2.0, 3.0, 4.0]
    assert ric.desired_rewards(w, lo, hi).tolist() == [-0.8, 2.6, 4.0]
    assert ric.desired_rewards(w, lo, hi, mapping="linear").tolist() == [-1.6, 0.2, 2.4]
    assert ric.desired_rewards(w, lo, hi, mapping="l2").tolist() == [-1.4, 0.8, 3.5]
    # a vertex asks for the best of its objective and the worst of the others
    assert ric.desired_rewards([0.0, 1.0, 0.0], lo, hi).tolist() == [-2.0, 3.0, 0.0]
    with pytest.raises(ValueError, match="ric.mapping"):
        ric.desired_rewards(w, lo, hi, mapping="cubic")


def test_reward_stats_are_rics_normalisation():
    scores = pd.DataFrame({"a": [1.0, 2.0, 3.0, 6.0], "b": [5.0, 5.0, 5.0, 5.0]})
    s = ric.reward_stats(scores, ["a", "b"])
    assert s["mean"] == [3.0, 5.0] and s["std"][0] == pytest.approx(np.std([1, 2, 3, 6]))
    assert s["std"][1] == 1.0 and s["lo"][1] == s["hi"][1] == 0.0  # a constant reward stays at 0
    assert s["lo"][0] == round(-2 / np.std([1, 2, 3, 6]), 1) and s["hi"][0] == round(3 / np.std([1, 2, 3, 6]), 1)


# Rewarded Soups ------------------------------------------------------------------------------------


def test_select_top_takes_each_objectives_best():
    scores = pd.DataFrame({"id": list("abcde"), "x": [5.0, 1.0, 4.0, 3.0, 2.0], "y": [0.0, 9.0, 1.0, 8.0, 7.0]})
    sel = soups.select_top(scores, ["x", "y"], 2)
    assert sel.loc[sel["preference_index"] == 0, "id"].tolist() == ["a", "c"]
    assert sel.loc[sel["preference_index"] == 1, "id"].tolist() == ["b", "d"]
    assert sel["weights"].tolist() == [[1.0, 0.0]] * 2 + [[0.0, 1.0]] * 2


@pytest.fixture(scope="module")
def two_adapters(tmp_path_factory, tiny_policy):
    """Two LoRA adapters (r 4, alpha 8: scale 2) on the tiny Llama with random A and B."""
    from paretohqd.policy.sft import build_model

    folder = tmp_path_factory.mktemp("soups")
    cfg = TrainConfig(lora_r=4, lora_alpha=8)
    out = []
    for i in range(2):
        torch.manual_seed(i)
        model = build_model(PolicyConfig(model=tiny_policy), cfg)
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B starts at 0; a trained adapter has B != 0
                torch.nn.init.normal_(p, std=0.05)
        model.save_pretrained(folder / f"objective-{i:02d}")
        out.append(folder / f"objective-{i:02d}")
    return out


def _merged_weights(policy, adapter) -> dict[str, torch.Tensor]:
    from paretohqd.policy.generate import load_for_generation

    # float32: the exactness checks are about the merge, not bf16 sampling weights
    return {k: v.clone() for k, v in load_for_generation(policy, adapter, dtype="float32").state_dict().items()}


def test_soup_is_the_exact_weight_interpolation(tmp_path, tiny_policy, two_adapters):
    """theta_w = W + w_1 dW_1 + w_2 dW_2. At w = (1, 0) the soup is objective 1's model bit for bit
    (the LoRA scale 2 is a power of two, so moving it from the product into A rounds nothing)."""
    policy = PolicyConfig(model=tiny_policy)
    prefs = np.array([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]])
    outs = [tmp_path / f"pref-{i:02d}" for i in range(3)]
    soups.merge(policy, two_adapters, prefs, outs)
    base = _merged_weights(policy, None)
    one, two = (_merged_weights(policy, a) for a in two_adapters)
    soup = [_merged_weights(policy, o) for o in outs]
    assert all(torch.equal(soup[0][k], one[k]) for k in one)
    assert all(torch.equal(soup[1][k], two[k]) for k in two)
    changed = [k for k in base if not torch.equal(one[k], base[k])]
    assert changed  # the adapters do change weights, so the checks above are not vacuous
    for k in changed:
        expected = base[k] + 0.3 * (one[k] - base[k]) + 0.7 * (two[k] - base[k])
        torch.testing.assert_close(soup[2][k], expected, rtol=1e-5, atol=1e-6)
    assert json.loads((outs[2] / "merge.json").read_text())["weights"] == [0.3, 0.7]


# Registry ----------------------------------------------------------------------------------------


def test_every_method_module_offers_the_same_functions():
    for name, m in METHODS.items():
        for fn in ("train", "final_models", "describe", "work"):
            assert callable(getattr(m.module, fn)), (name, fn)
        cfg = configure(load_config("configs/compare-cpu.yaml"), name)
        assert m.module.describe(cfg) and m.module.work(cfg)["models"] >= 1


def test_method_implies_its_settings_and_refuses_contradictions():
    assert configure(load_config(None, ["method=stage1-only"])).stage2.enabled is False
    assert configure(load_config(None, ["method=scalarised"])).select.method == "scalarised"
    assert configure(load_config(None, ["method=full-data"])).select.method == "random"
    # a key set to the value the method implies is no contradiction (a run folder's config.yaml)
    assert configure(load_config(None, ["method=stage1-only", "stage2.enabled=false"])).stage2.enabled is False
    with pytest.raises(ConfigError, match="method 'stage1-only' means stage2.enabled = False"):
        configure(load_config(None, ["method=stage1-only", "stage2.enabled=true"]))
    with pytest.raises(ConfigError, match="method 'rewarded-soups' means train.lora = True"):
        configure(load_config(None, ["method=rewarded-soups", "train.lora=false"]))
    with pytest.raises(ConfigError, match="method: 'dpo' is not a method; choose one of paretohqd, stage1-only"):
        configure(load_config(None, ["method=dpo"]))
    with pytest.raises(ConfigError, match="compare.methods"):
        load_config(None, ["compare.methods=[ric, ric]"])
    with pytest.raises(ConfigError, match="multiple of num_generations"):
        load_config(None, ["morlhf.batch_size=6", "morlhf.num_generations=4"])


def test_representatives_are_vertices_and_balanced():
    from paretohqd.pareto.preferences import simplex_grid

    grid = simplex_grid(3, 5)
    picks = [grid[i].tolist() for i in paretohqd.representatives(grid)]
    assert picks[:3] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert np.allclose(sorted(picks[3]), [0.25, 0.25, 0.5])


def test_stage2_prompts_per_model_or_total():
    """`model`: each of the M + 1 representatives answers every stage-2 prompt; `total`: they share them."""
    cfg = load_config("configs/demo.yaml", ["stage2.prompts=30", "generate.max_new_tokens=10"])
    per_model = paretohqd.work(cfg)["generated_tokens"]
    shared = paretohqd.work(cfg.model_copy(update={"stage2": cfg.stage2.model_copy(update={"prompts_per": "total"})}))
    n_reps = len(paretohqd.representatives(np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])))  # 3 for M = 2
    assert per_model == n_reps * 30 * 10 and shared["generated_tokens"] == 30 * 10


# The method contract -------------------------------------------------------------------------------


def _contract(kind: str, name_starts: str = "") -> dict:
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    [contract] = [c for c in pyproject["tool"]["importlinter"]["contracts"]
                  if c["type"] == kind and c["name"].startswith(name_starts)]
    return contract


def _independent_methods() -> set[str]:
    """The modules pyproject's import contract keeps independent of each other."""
    return set(_contract("independence")["modules"])


def test_outer_layers_are_forbidden_every_registered_method_module():
    """The `forbidden` contract (outer layers reach a method only through the registry) lists exactly
    the registry's modules, as the independence contract does."""
    assert set(_contract("forbidden", "outer layers")["forbidden_modules"]) == {m.module.__name__ for m in METHODS.values()}


def _unchecked(registry) -> set[str]:
    """Registered method modules the import contract does not keep independent (lint-imports would let
    them import another method)."""
    return {m.module.__name__ for m in registry.values()} - _independent_methods()


def test_every_registered_module_keeps_the_contract_and_is_import_checked():
    from paretohqd.methods.contract import problems

    assert {name: problems(m.module) for name, m in METHODS.items() if problems(m.module)} == {}
    assert _unchecked(METHODS) == set()
    assert _independent_methods() <= {m.module.__name__ for m in METHODS.values()}  # no stale entry either


def test_each_method_section_is_read_by_the_method_its_docstring_names():
    """paretohqd/config/baselines.py keeps the baselines' sections, each docstring naming its method module
    (`Config` is read below the methods layer); the registry's `reads` must agree with those names."""
    import sys

    from paretohqd.config import Config
    from paretohqd.methods import start

    named = {name: f.annotation.__doc__ for name, f in Config.model_fields.items()
             if "paretohqd.methods." in (getattr(f.annotation, "__doc__", None) or "")}
    read: dict[str, set[str]] = {}
    for m in METHODS.values():
        for section in m.reads:
            read.setdefault(section, set()).add(m.module.__name__)
    assert set(named) == set(read) == {"ric", "soups", "morlhf", "modpo", "sft_start"}
    for section, modules in read.items():
        if section == "sft_start":  # one SFT model several methods share: each imports the module it names
            assert "`paretohqd.methods.start`" in named[section]
            assert all(sys.modules[module].start is start for module in modules)
            continue
        assert any(f"`{module}`" in named[section] for module in modules), section


def _toy_method():
    """A whole method in one module: a model per preference, nothing trained."""
    import types

    from paretohqd.methods.contract import per_preference

    toy = types.ModuleType("paretohqd.methods.toy")
    toy.train = lambda r, tokenizer: None
    toy.final_models = lambda r: per_preference(r, "toy", r.preferences)
    toy.describe = lambda cfg: "toy (nothing trained)"
    toy.work = lambda cfg, n_samples=None: {"models": 1}
    return toy


def test_a_new_method_is_one_module_and_one_registry_line(monkeypatch, tmp_path):
    from paretohqd.methods import Method, several_processes
    from paretohqd.methods.contract import problems
    from paretohqd.runfolder import RunFolder

    toy = _toy_method()
    monkeypatch.setitem(METHODS, "toy", Method(toy, {"train.lora": True}))  # the one registry line
    cfg = configure(load_config(None, ["method=toy", f"runs_dir={tmp_path}", "select.preferences=3"]))
    assert cfg.method == "toy" and cfg.train.lora and several_processes(cfg)
    assert problems(toy) == []
    models = toy.final_models(RunFolder(cfg))
    assert [m.model for m in models] == ["pref-00", "pref-01", "pref-02"]
    assert models[1].adapter == tmp_path / "run" / "toy" / "pref-01" and models[1].done.name == "train.json"
    # ... and the checks notice what a new method still owes: its place in the import contract
    assert _unchecked(METHODS) == {"paretohqd.methods.toy"}


def test_a_module_short_of_the_contract_is_named():
    from paretohqd.methods.contract import problems

    toy = _toy_method()
    del toy.work
    toy.describe = lambda config: "renamed parameter"
    toy.check = lambda cfg, extra: []
    assert problems(toy) == ["paretohqd.methods.toy.describe must take (cfg)",
                             "paretohqd.methods.toy.work is missing: a method module offers work(cfg, n_samples)",
                             "paretohqd.methods.toy.check must take (cfg)"]


def test_normaliser_of_the_scores_record_is_the_fitted_one(tmp_path):
    """The scores' statistics record (`write_scores`) and a fit on the same table give the same z;
    a constant reward gets std 1 either way, so it stays 0."""
    from paretohqd.rewards.normalise import Normaliser
    from paretohqd.rewards.score import stats_path

    scores = pd.DataFrame({"a": [1.0, 2.0, 3.0, 6.0], "b": [5.0] * 4})
    stats = {o: {"mean": float(scores[o].mean()), "std": float(scores[o].std(ddof=0))} for o in scores}
    stats_path(tmp_path / "scores.parquet").write_text(json.dumps({"stats": stats}))
    read = Normaliser.of_scores(tmp_path / "scores.parquet", ["b", "a"])
    fitted = Normaliser.fit(scores[["b", "a"]].to_numpy())
    before = scores.copy()
    assert np.allclose(read(scores[["b", "a"]]), fitted(scores[["b", "a"]]))
    assert read.std.tolist() == pytest.approx([1.0, np.std([1, 2, 3, 6])]) and fitted.std[0] == 1.0
    assert np.allclose(read(scores[["b", "a"]])[:, 1], (scores["a"] - 3.0) / np.std([1, 2, 3, 6]))
    assert not read(scores[["b", "a"]])[:, 0].any()
    pd.testing.assert_frame_equal(scores, before)  # the input is not mutated
