"""Dry runs of the paper's configs on CPU: every setting as written in configs/paper-*.yaml, only
the models swapped for offline stand-ins and the budgets shrunk.

The stand-in policy is a tiny random Llama with the paper's base model's own tokenizer, Llama-2's
(../shared/tokenizers/llama-2, as the hub's folder holds it: vocab 32,000, no chat template, so the
`hh` prompt format). Where the shared folder has no such file, it is the tiny Llama with SmolLM2's
tokenizer *with its chat template removed*, which behaves as base Llama-2 does.
The reward models are the offline MiniLM heads; the data are 40 real HH rows per subset for
training and the next 20 for the evaluation split (standing in for the hub's train and test).
"""

import gzip
import itertools
import json

import pandas as pd
import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from paretohqd.cli import app
from paretohqd.config import load_config
from paretohqd.pareto.preferences import preferences_from_config
from paretohqd.policy.load import load_tokenizer
from paretohqd.testing import llama2_model_file, llama2_tokenizer, tiny_llama

OFFLINE_HEADS = {"helpful": "minilm-helpful", "harmless": "minilm-harmless", "humor": "minilm-humor"}


@pytest.fixture(scope="module")
def base_policy(tmp_path_factory, request):
    """A tiny random Llama with Llama-2's tokenizer files as the hub's folder has them; or, without them,
    the tiny SmolLM2-tokenizer Llama stripped of its chat template (as base Llama-2 ships)."""
    folder = tmp_path_factory.mktemp("base-llama")
    if llama2_model_file().exists():
        tiny_llama(folder, load_tokenizer(str(llama2_tokenizer(tmp_path_factory.mktemp("llama2"), "hub folder"))))
        llama2_tokenizer(folder, "hub folder")  # the hub's files, not the loaded tokenizer's re-saved ones
        tok = load_tokenizer(str(folder))
        assert (len(tok), tok.bos_token_id, tok.eos_token_id, tok.chat_template) == (32000, 1, 2, None)
        return folder
    from transformers import AutoModelForCausalLM

    tiny_policy = request.getfixturevalue("tiny_policy")
    AutoModelForCausalLM.from_pretrained(tiny_policy).save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(tiny_policy)
    tok.chat_template = None
    tok.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    assert not AutoTokenizer.from_pretrained(folder).chat_template
    return folder


@pytest.fixture(scope="module")
def test_split(tmp_path_factory, hh_dir):
    """Rows 40-59 of each HH subset: an evaluation split beside `small_hh`'s rows 0-39."""
    folder = tmp_path_factory.mktemp("hh-test")
    for subset in ("helpful-base", "harmless-base"):
        with gzip.open(hh_dir / f"{subset}.jsonl.gz", "rt") as src, gzip.open(folder / f"{subset}.jsonl.gz", "wt") as dst:
            dst.writelines(itertools.islice(src, 40, 60))
    return folder


def _args(config, tmp_path, base_policy, small_hh, test_split, extra=()):
    cfg = load_config(config)
    # rewards.dir: the session's heads, trained on the same rows by test_pipeline / test_compare too
    sets = [f"runs_dir={tmp_path / 'runs'}", f"policy.model={base_policy}", f"data.sources=[{small_hh}]",
            f"evaluate.sources=[{test_split}]", "rewards.device=cpu",
            f"rewards.dir={tmp_path.parent / 'rewards'}", "rewards.epochs=3",
            "rewards.humor_positives=40", "rewards.humor_negatives=40",
            # budgets only
            "select.k=2", "train.steps=1", "sft_start.steps=1", "stage2.steps=1", "stage2.prompts=4", "evaluate.prompts=3",
            "evaluate.bootstrap=50", "generate.max_new_tokens=8", *extra]
    sets += [f"rewards.models.{o}={OFFLINE_HEADS[o]}" for o in cfg.rewards.models]
    args = ["run", config]
    for s in sets:
        args += ["--set", s]
    return args


PAPER_GRIDS = {"configs/paper-hh-2obj.yaml": 11, "configs/paper-hh-3obj.yaml": 13}  # w = 0, 0.1, ..., 1; RiC's 13


def test_paper_configs_ask_for_the_papers_preferences():
    for config, n in PAPER_GRIDS.items():
        cfg = load_config(config)
        assert len(preferences_from_config(cfg.select.preferences, len(cfg.rewards.models))) == n, config


# The whole grids train in the slow runs (11 and 13 preferences, ~80 and ~60 s); the default run
# trains 3 of the 2-objective grid's 11 (w_helpful 0, 0.5, 1), every other setting as written (the
# grids themselves: the test above). The 3-objective config runs in the default suite through the
# MODPO dry run below.
@pytest.mark.parametrize("config, prefs", [("configs/paper-hh-2obj.yaml", "3"),
                                           pytest.param("configs/paper-hh-2obj.yaml", None, marks=pytest.mark.slow),
                                           pytest.param("configs/paper-hh-3obj.yaml", None, marks=pytest.mark.slow)],
                         ids=["2obj-3-preferences", "2obj-all-11", "3obj-all-13"])
def test_paper_config_dry_run(config, prefs, tmp_path, base_policy, small_hh, test_split):
    cfg = load_config(config)
    extra = [f"select.preferences={prefs}"] if prefs else []
    res = CliRunner().invoke(app, _args(config, tmp_path, base_policy, small_hh, test_split, extra))
    assert res.exit_code == 0, (res.output, res.exception)
    root = tmp_path / "runs" / cfg.name
    run_cfg = load_config(root / "config.yaml")
    assert run_cfg.policy.prompt_format == "auto" and run_cfg.evaluate.source == "split"
    report = json.loads((root / "report.json").read_text())
    models = report["methods"][0]["models"]
    n_prefs = int(prefs) if prefs else PAPER_GRIDS[config]
    assert len(models) == n_prefs
    assert (root / "stage2" / f"pref-{n_prefs - 1:02d}" / "train.json").exists()
    held = json.loads((root / "evaluate" / "disjoint.json").read_text())
    assert held["overlap"] == 0 and held["heldout_prompts"] == 3


@pytest.mark.parametrize("prefs", ["[[0.0, 0.5, 0.5], [0.5, 0.25, 0.25], [1.0, 0.0, 0.0]]",
                                   pytest.param(None, marks=pytest.mark.slow)], ids=["3-preferences", "all-13"])
def test_paper_config_modpo_dry_run(tmp_path, base_policy, small_hh, test_split, prefs):
    """MODPO as the paper config sets it, for three objectives (margins from two reward models, w_helpful = 0
    floored), on the raw HH format, from the SFT start; only its budget shrunk (a tenth of an epoch) and, in
    the default run, 3 of its 13 preferences (the slow run trains all 13)."""
    config = "configs/paper-hh-3obj.yaml"
    sets = ["method=modpo", "modpo.epochs=0.1", "modpo.batch_size=2"] + ([f"modpo.preferences={prefs}"] if prefs else [])
    args = _args(config, tmp_path, base_policy, small_hh, test_split, sets)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    root = tmp_path / "runs" / load_config(config).name
    report = json.loads((root / "report.json").read_text())
    n = PAPER_GRIDS[config] if prefs is None else 3
    assert len(report["methods"][0]["models"]) == n
    trained = [json.loads((root / "modpo" / f"pref-{i:02d}" / "train.json").read_text()) for i in range(n)]
    assert {t["objective"] for t in trained} == {"helpful"} and min(t["pair_weight"] for t in trained) == 0.1
    assert all(abs(sum(t["trained_weights"]) - 1) < 1e-9 for t in trained)  # floored weights stay on the simplex
    n_pairs = len(pd.read_parquet(root / "modpo" / "pairs.parquet"))
    assert {(t["init"], t["steps"]) for t in trained} == {(str(root / "sft"), -(-n_pairs // 20))}  # ceil(0.1 n / 2)


def test_chat_format_without_a_template_stops_before_anything_runs(tmp_path, base_policy, small_hh, test_split):
    args = _args("configs/paper-hh-2obj.yaml", tmp_path, base_policy, small_hh, test_split,
                 ["policy.prompt_format=chat"])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "has no chat template" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "runs").exists()  # nothing written, nothing paid for


def test_unreachable_hub_ids_are_one_line_each(tmp_path, monkeypatch):
    """The shipped paper config with no hub: exit 2, one line per model, no traceback (offline mode
    makes the answer immediate here; without it the hub is asked, concurrently)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    res = CliRunner().invoke(app, ["run", "configs/paper-hh-2obj.yaml", "--check", "--set", f"runs_dir={tmp_path}"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    for key, repo in [("policy.model", "meta-llama/Llama-2-7b-hf"),
                      ("rewards.models.helpful", "Ray2333/gpt2-large-helpful-reward_model"),
                      ("rewards.models.harmless", "Ray2333/gpt2-large-harmless-reward_model")]:
        assert f"{key}: cannot reach the model '{repo}'" in res.output


def test_paper_configs_set_the_baselines_at_their_authors_budgets():
    """Each baseline's budget in the paper configs is its authors' (sources in the YAML comments)."""
    import numpy as np

    from paretohqd.methods import morlhf

    for config in ("configs/paper-hh-2obj.yaml", "configs/paper-hh-3obj.yaml"):
        cfg = load_config(config)
        assert (cfg.ric.steps, cfg.train.batch_size) == (20_000, 8)  # RiC's README: 20,000 x 4 processes x 2
        assert (cfg.ric.online_steps, cfg.ric.mapping) == (4_000, "l2")  # the README's scale; ric/evaluation.py
        assert (cfg.sft_start.steps, cfg.morlhf.temperature) == (10_000, 0.7)  # RiC's sft.py: 80k; ppo/morlhf.py
        assert (cfg.modpo.init, cfg.modpo.epochs, cfg.modpo.steps) == ("sft", 3, None)  # MODPO's scripts
        assert "hh-rlhf" not in cfg.modpo.subsets  # the hub's pairs keep their subset
    three = load_config("configs/paper-hh-3obj.yaml")
    np.testing.assert_allclose(morlhf.preferences(three), [[1 / 3, 1 / 3, 1 / 3]], atol=1e-6)  # RiC's ppo/morlhf.py
    assert len(morlhf.preferences(load_config("configs/paper-hh-2obj.yaml"))) == 5  # the paper's MORLHF row
