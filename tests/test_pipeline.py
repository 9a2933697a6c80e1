"""`paretohqd run` end to end: a tiny random Llama (fast), then the real offline parts (smoke)."""

import gc
import json

import pandas as pd

import pytest
from transformers import PreTrainedModel
from typer.testing import CliRunner

from paretohqd import pipeline
from paretohqd.cli import app
from paretohqd.config import ConfigError, load_config
from paretohqd.methods import paretohqd as method


def _overrides(tmp_path, small_hh, policy):
    return [f"runs_dir={tmp_path / 'runs'}", f"data.sources=[{small_hh}]", f"policy.model={policy}",
            f"rewards.dir={tmp_path.parent / 'rewards'}", "rewards.epochs=3",
            "select.preferences=3", "select.k=4", "train.steps=2", "train.batch_size=2", "train.warmup_steps=0",
            "stage2.prompts=4", "stage2.steps=1", "evaluate.prompts=3", "generate.max_new_tokens=8",
            "generate.batch_size=4"]


def _live_models() -> set[int]:
    return {id(o) for o in gc.get_objects() if issubclass(type(o), PreTrainedModel)}  # type(): no proxy lookups


def test_run_tiny_end_to_end_and_resume(tmp_path, small_hh, tiny_policy, monkeypatch):
    cfg = load_config("configs/demo.yaml", _overrides(tmp_path, small_hh, tiny_policy) + ["stage2.prompts_per=total"])
    gc.collect()
    before = _live_models()  # other tests' fixtures may hold models
    real = method.finetune_rows

    def fail_on_second(cfg_, tok, rows, out, **kw):
        if out.name == "pref-01":
            raise RuntimeError("injected failure")
        return real(cfg_, tok, rows, out, **kw)

    monkeypatch.setattr(method, "finetune_rows", fail_on_second)
    with pytest.raises(RuntimeError, match="injected"):
        pipeline.run(cfg)
    root = tmp_path / "runs" / "demo"
    first = (root / "stage1" / "pref-00" / "train.json").stat().st_mtime_ns
    assert not (root / "stage1" / "pref-01").exists()

    monkeypatch.setattr(method, "finetune_rows", real)
    pipeline.run(cfg)
    # every step frees its models when it ends (without this they lived on in reference cycles)
    assert not _live_models() - before
    assert (root / "stage1" / "pref-00" / "train.json").stat().st_mtime_ns == first  # finished work skipped
    manifest = json.loads((root / "manifest.json").read_text())["steps"]
    for name in ("prepare", "score", "select", "stage2/score", "stage2/select", "stage2/pref-02 w=[1.0, 0.0]",
                 "evaluate"):
        assert manifest[name]["wall_s"] > 0 and manifest[name]["n_devices"] == 1
        assert manifest[name]["device_s"] == pytest.approx(manifest[name]["wall_s"])
    assert sum(n.startswith("stage2/generate") for n in manifest) == 3  # M + 1 representatives
    # stage2.prompts_per total: the 3 representatives share the 4 prompts, each answering its own
    pools = [pd.read_parquet(p)["prompt"] for p in sorted((root / "stage2").glob("generated-*.parquet"))]
    assert sum(len(set(p)) for p in pools) == len(set().union(*map(set, pools))) <= 4
    for i in range(3):
        trained = json.loads((root / "stage2" / f"pref-{i:02d}" / "train.json").read_text())
        assert trained["steps"] == 1 and trained["samples"] >= 1
        assert (root / "stage2" / f"pref-{i:02d}" / "adapter_model.safetensors").exists()
    assert (root / "config.yaml").exists() and (root / "seed.json").exists()
    # the same folder with another config is refused, naming the keys that differ
    with pytest.raises(ConfigError, match="differs in: select.k"):
        pipeline.run(load_config("configs/demo.yaml", _overrides(tmp_path, small_hh, tiny_policy) + ["select.k=5"]))


def test_heldout_prompts_leave_training(hh_dir):
    import pandas as pd

    df = pd.DataFrame({"prompt": ["a", "a", "b", "c", "d"], "messages": [[]] * 5, "response": list("vwxyz")})
    from paretohqd.data.prepare import split_heldout

    train, held = split_heldout(df, 2, seed=0)
    assert len(held) == 2 and not set(held["prompt"]) & set(train["prompt"])
    assert len(train) + df["prompt"].isin(held["prompt"]).sum() == 5
    with pytest.raises(ConfigError, match="evaluate.prompts"):
        split_heldout(df, 4, seed=0)


def test_cli_run_smoke_on_real_offline_parts(tmp_path, small_hh):
    """The real SmolLM2 and MiniLM heads, the minimal budget, through the CLI."""
    args = ["run", "configs/demo.yaml"]
    for o in _overrides(tmp_path, small_hh, "smollm2-135m-instruct") + [
            "train.steps=1", "select.preferences=2", "stage2.prompts=2", "evaluate.prompts=2", "generate.max_new_tokens=4"]:
        args += ["--set", o]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "where the time went" in res.output
    root = tmp_path / "runs" / "demo"
    assert (root / "stage2" / "pref-01" / "adapter_model.safetensors").exists()


def test_cli_run_bad_config_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: 0\n")
    res = CliRunner().invoke(app, ["run", str(bad)])
    assert res.exit_code == 2 and "train.steps" in res.output and "Traceback" not in res.output
