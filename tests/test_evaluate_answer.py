"""`evaluate` on a tiny run folder: a random 2-layer Llama (real SmolLM2 tokenizer) with LoRA
adapters as the preference models, and a deterministic fake scorer in place of the reward models
(they live in `paretohqd.rewards`; here only the plumbing around them is under test)."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from audit_writes import changes_under

from paretohqd import pipeline
from paretohqd.cli import app
from paretohqd.config import Config, PolicyConfig, dump_config
from paretohqd.data.prepare import prompt_id, sample_id
from paretohqd.evaluate import answer as ev
from paretohqd.io import InputError, write_json, write_parquet
from paretohqd.methods import paretohqd as method
from paretohqd.pareto.metrics import hypervolume
from paretohqd.pareto.preferences import preferences_from_config
from paretohqd.policy.load import load_tokenizer
from paretohqd.runfolder import RunFolder

OBJ = ["helpful", "harmless"]
N_PROMPTS = 4


def make_config(tmp_path, policy: str, **over) -> Config:
    kw = dict(name="tiny", runs_dir=str(tmp_path), seed=3, policy={"model": policy},
              select={"preferences": 3, "k": 2}, stage2={"enabled": False},
              train={"lora_r": 2, "lora_alpha": 4, "lora_targets": ["q_proj", "v_proj"]},
              generate={"max_new_tokens": 6, "batch_size": 4},
              evaluate={"prompts": N_PROMPTS, "bootstrap": 100, "samples": 1}) | over
    # not `minilm-*` names: the pipeline would train those offline reward heads first;
    # local folders (what preflight accepts without the hub) that `fake_score` stands in for
    models = {}
    for name in OBJ:
        (tmp_path / f"rm-{name}").mkdir(exist_ok=True)
        (tmp_path / f"rm-{name}" / "config.json").write_text("{}")
        (tmp_path / f"rm-{name}" / "model.safetensors").write_bytes(b"")  # preflight asks for weights
        models[name] = str(tmp_path / f"rm-{name}")
    return Config(rewards={"models": models}, **kw)


def fake_score(cfg, df, out, **_):
    """Deterministic stand-in for the reward models (any `write_scores` options ignored): helpful = words,
    harmless = -characters / 10."""
    write_parquet(df.assign(helpful=df["response"].str.split().str.len().astype(float),
                            harmless=-df["response"].str.len() / 10), out)


def evaluate(cfg, root):
    """The evaluate step as `paretohqd run` calls it."""
    r = RunFolder(cfg, root)
    return ev.evaluate(r, load_tokenizer(cfg.policy.model), method.final_models(r), method.describe(cfg))


def _prompt(messages) -> str:
    return "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in messages)


@pytest.fixture
def tiny_run(tmp_path, tiny_policy, hh_samples, monkeypatch):
    """A run folder as `paretohqd run` leaves it before evaluate (stage 1 only, 3 preferences)."""
    from paretohqd.policy.sft import build_model

    monkeypatch.setattr(ev, "write_scores", fake_score)
    cfg = make_config(tmp_path, tiny_policy)
    root = tmp_path / "tiny"
    rows = [{"prompt": _prompt(m), "messages": m, "response": r} for m, r in hh_samples]
    df = pd.DataFrame(rows).drop_duplicates("prompt").reset_index(drop=True)
    held, train = df.iloc[:N_PROMPTS + 1], df.iloc[N_PROMPTS + 1:]
    write_parquet(held.assign(prompt_id=held["prompt"].map(prompt_id))[["prompt_id", "prompt", "messages"]],
                  root / "data" / "heldout.parquet")
    write_parquet(train, root / "data" / "train.parquet")
    rng = np.random.default_rng(0)
    write_parquet(train.assign(helpful=rng.normal(5, 3, len(train)), harmless=rng.normal(-20, 8, len(train))),
                  root / "data" / "scores.parquet")
    write_json({"steps": {"prepare": {"wall_s": 10.0, "device_s": 10.0, "device": "cpu"}}}, root / "manifest.json")
    (root / "config.yaml").write_text(dump_config(cfg))
    for i in range(3):
        model = build_model(PolicyConfig(model=tiny_policy), cfg.train)
        torch.manual_seed(i)
        for name, p in model.named_parameters():
            if "lora_B" in name:  # fresh LoRA B is zero; make each adapter change the model
                torch.nn.init.normal_(p, std=0.5)
        out = root / "stage1" / f"pref-{i:02d}"
        model.save_pretrained(out)
        write_json({"steps": 0}, out / "train.json")
    return cfg, root


def test_evaluate_answers_scores_and_reports(tiny_run):
    cfg, root = tiny_run
    report_path = pipeline.evaluate_run(cfg, root)
    df = pd.read_parquet(root / "evaluate" / "responses.parquet")
    assert list(df.columns[:7]) == ["id", "model", "preference_index", "weights", "prompt_id", "prompt", "response"]
    assert {"collapse", *OBJ} <= set(df.columns)
    assert df.groupby("model", sort=False).size().to_dict() == {"base": 4, "pref-00": 4, "pref-01": 4, "pref-02": 4}
    prefs = preferences_from_config(3, 2)  # (3, 2) the run's weights, in preference order
    for i in range(3):
        assert df.loc[df["model"] == f"pref-{i:02d}", "weights"].iloc[0].tolist() == prefs[i].tolist()
    assert df.loc[df["model"] == "base", "weights"].isna().all()
    held = pd.read_parquet(root / "data" / "heldout.parquet")
    assert set(df["prompt_id"]) == set(held["prompt_id"].head(N_PROMPTS))  # the first evaluate.prompts only
    # adapters are loaded: the preference models do not all answer like the base model
    answers = df.pivot(index="prompt_id", columns="model", values="response")
    assert (answers["pref-00"] != answers["base"]).any()

    scores = pd.read_parquet(root / "data" / "scores.parquet")
    bounds = json.loads((root / "evaluate" / "bounds.json").read_text())
    assert bounds["lower"] == scores[OBJ].min().tolist() and bounds["upper"] == scores[OBJ].max().tolist()
    disjoint = json.loads((root / "evaluate" / "disjoint.json").read_text())
    assert disjoint["heldout_prompts"] == N_PROMPTS and disjoint["overlap"] == 0
    assert disjoint["training_prompts"] == {"data/train.parquet": len(scores)}
    assert "evaluate" in json.loads((root / "manifest.json").read_text())["steps"]

    report = json.loads(report_path.read_text())
    (m,) = report["methods"]
    means = np.array([[r["mean"][o] for o in OBJ] for r in m["models"]])  # (3, 2)
    expected = df[df["preference_index"] >= 0].groupby("model")[OBJ].mean().to_numpy()
    np.testing.assert_allclose(means, expected)
    assert m["hypervolume"] == pytest.approx(hypervolume(means, lower=bounds["lower"], upper=bounds["upper"]))
    assert m["collapse_rate"] == pytest.approx(df[df["model"] != "base"]["collapse"].notna().mean())
    assert m["disjointness"]["overlap"] == 0 and m["compute"]["stages"]["prepare"]["wall_h"] > 0
    assert (root / "report.md").exists() and (root / "front.png").read_bytes()[:4] == b"\x89PNG"
    protocol = json.loads((root / "evaluate" / "meta.json").read_text())["protocol"]
    assert protocol["prompt_format"] == "chat" and protocol["top_k"] == 0 and m["protocol"] == protocol
    assert "Protocol: prompt format chat; r_min = data minimum; evaluation prompts held out" in (root / "report.md").read_text()


def test_evaluate_resumes_per_model(tiny_run, monkeypatch):
    cfg, root = tiny_run
    evaluate(cfg, root)
    first = pd.read_parquet(root / "evaluate" / "responses.parquet")
    calls = []
    real = ev.answer
    monkeypatch.setattr(ev, "answer", lambda *a, **kw: (calls.append(kw["label"].split()[0]), real(*a, **kw))[1])
    evaluate(cfg, root)  # finished: nothing generated
    assert calls == []
    (root / "evaluate" / "responses.parquet").unlink()  # killed after pref-00, before scoring
    (root / "evaluate" / "responses" / "pref-01.parquet").unlink()
    (root / "evaluate" / "responses" / "pref-02.parquet").unlink()
    evaluate(cfg, root)
    assert calls == ["pref-01", "pref-02"]
    again = pd.read_parquet(root / "evaluate" / "responses.parquet")
    pd.testing.assert_frame_equal(again, first)  # same seed: the regenerated answers are the same


def test_disjointness_fails_loudly_on_overlap(tiny_run):
    cfg, root = tiny_run
    train = pd.read_parquet(root / "data" / "train.parquet")
    held = pd.read_parquet(root / "data" / "heldout.parquet")
    leaked = pd.concat([train, held.iloc[[2]].assign(response="x")], ignore_index=True)
    write_parquet(leaked, root / "data" / "train.parquet")
    with pytest.raises(InputError, match=r"1 of the 4 held-out prompts were also used in training "
                                         r"\(e.g. prompt_id \w+ in data/train.parquet"):
        evaluate(cfg, root)
    assert not (root / "evaluate" / "responses").exists()  # failed before any generation


def test_disjointness_checks_stage2_pools(tiny_run):
    cfg, root = tiny_run
    held = pd.read_parquet(root / "data" / "heldout.parquet")
    prompts = ev.heldout_prompts(root, N_PROMPTS)
    write_parquet(held.iloc[[4]][["prompt"]], root / "stage2" / "generated-pref-00.parquet")  # not evaluated
    check = ev.check_disjoint(root, prompts)
    assert check["training_prompts"]["stage2/generated-pref-00.parquet"] == 1 and check["overlap"] == 0
    write_parquet(held.iloc[[0, 1]][["prompt"]], root / "stage2" / "generated-pref-01.parquet")
    with pytest.raises(InputError, match=r"2 of the 4 held-out prompts .* in stage2/generated-pref-01.parquet"):
        ev.check_disjoint(root, prompts)


def test_evaluate_input_errors(tiny_run):
    cfg, root = tiny_run
    with pytest.raises(InputError, match=r"holds 5 distinct prompts but evaluate.prompts = 9; "
                                         r"set evaluate.prompts <= 5"):
        ev.heldout_prompts(root, 9)
    (root / "stage1" / "pref-01" / "train.json").unlink()
    with pytest.raises(InputError, match=r"1 preference model\(s\) not trained to the end: .*pref-01"):
        evaluate(cfg, root)
    assert not (root / "evaluate").exists()  # refused before it wrote anything
    (root / "evaluate").mkdir()
    (root / "evaluate" / "bounds.json").write_text(json.dumps({"objectives": ["a", "b"]}))
    with pytest.raises(InputError, match=r"holds bounds for \['a', 'b'\] but the config names"):
        ev.hypervolume_box(root, OBJ)
    (root / "evaluate" / "bounds.json").unlink()
    with pytest.raises(InputError, match=r"scores.parquet lacks objective column\(s\) \['humor'\]"):
        ev.hypervolume_box(root, ["helpful", "humor"])
    scores = pd.read_parquet(root / "data" / "scores.parquet")
    write_parquet(scores.assign(harmless=1.0), root / "data" / "scores.parquet")
    with pytest.raises(InputError, match=r"take one value only"):
        ev.hypervolume_box(root, OBJ)
    (root / "data" / "train.parquet").unlink()
    with pytest.raises(InputError, match="train.parquet: no such file; cannot check the held-out prompts"):
        ev.check_disjoint(root, ev.heldout_prompts(root, 2))
    (root / "data" / "heldout.parquet").unlink()
    with pytest.raises(InputError, match="heldout.parquet: no such file; the prepare step"):
        ev.heldout_prompts(root, 2)


def test_hypervolume_box_stores_min_max_mean_std_once(tmp_path):
    scores = pd.DataFrame({"helpful": [0.0, 2.0, 4.0], "harmless": [1.0, 1.0, 7.0], "id": ["a", "b", "c"]})
    write_parquet(scores, tmp_path / "data" / "scores.parquet")
    box = ev.hypervolume_box(tmp_path, OBJ)
    assert box["lower"] == [0.0, 1.0] and box["upper"] == [4.0, 7.0]
    assert box["mean"] == pytest.approx([2.0, 3.0])
    assert box["std"] == pytest.approx(scores[OBJ].std(ddof=0).tolist())  # population sd, as scores.stats.json
    assert json.loads((tmp_path / "evaluate" / "bounds.json").read_text()) == box
    write_parquet(scores.assign(helpful=9.0), tmp_path / "data" / "scores.parquet")
    assert ev.hypervolume_box(tmp_path, OBJ) == box  # stored once: later calls read the file


def test_evaluate_cli_loads_the_run_config(tmp_path, monkeypatch):
    cfg = Config(name="demo", runs_dir=str(tmp_path), evaluate={"prompts": 7})
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "config.yaml").write_text(dump_config(cfg))
    seen = []
    monkeypatch.setattr(pipeline, "evaluate_run", lambda c, root: seen.append((c, root)))
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "demo"), "--set", "evaluate.bootstrap=10"])
    assert res.exit_code == 0, res.output
    (c, root), = seen
    assert root == tmp_path / "demo" and c.evaluate.prompts == 7 and c.evaluate.bootstrap == 10
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no such config file" in res.output


def test_pipeline_ends_with_evaluate_and_report(tmp_path, tiny_policy, hh_samples, monkeypatch):
    """`paretohqd run` on tiny data: its last step is evaluate, then the report is written and
    printed, and the compute in it includes the evaluate step."""
    def tiny_prepare(cfg, tokenizer, out):
        df = pd.DataFrame([{"prompt": _prompt(m), "messages": m, "response": r} for m, r in hh_samples])
        df.insert(0, "id", [sample_id(p, r) for p, r in zip(df["prompt"], df["response"])])
        write_parquet(df, out)
        return df, {"kept": len(df)}

    monkeypatch.setattr(pipeline, "prepare", tiny_prepare)
    for module in (pipeline, ev):
        monkeypatch.setattr(module, "write_scores", fake_score)
    cfg = make_config(tmp_path, tiny_policy, select={"preferences": 2, "k": 2, "pool_size": 2},
                      train={"steps": 1, "batch_size": 2, "lora_r": 2, "lora_alpha": 4, "mixed_precision": "no",
                             "lora_targets": ["q_proj"]},
                      evaluate={"prompts": 2, "bootstrap": 50, "samples": 1})
    root = pipeline.run(cfg)
    steps = json.loads((root / "manifest.json").read_text())["steps"]
    assert list(steps)[-1] == "evaluate"
    report = json.loads((root / "report.json").read_text())
    assert report["methods"][0]["compute"]["stages"]["evaluate"]["steps"] == 1
    assert [r["model"] for r in report["methods"][0]["models"]] == ["pref-00", "pref-01"]
    assert (root / "front.png").exists() and (root / "report.md").exists()


def test_interpolation_quality_compares_each_left_out_preference_with_its_neighbours_mix(tiny_run, monkeypatch):
    import shutil

    from paretohqd.rewards import score
    from paretohqd.interpolation import interpolation_quality

    cfg, root = tiny_run
    monkeypatch.setattr(score, "write_scores", fake_score)
    with pytest.raises(InputError, match=r"responses.parquet: no such file; evaluate the run first"):
        interpolation_quality(root)
    # pref-00 and pref-02 made copies of pref-01: their half-and-half mix is pref-01's weights (up to
    # float rounding), so with the evaluation's seed it must answer exactly as pref-01 did
    for i in (0, 2):
        shutil.rmtree(root / "stage1" / f"pref-{i:02d}")
        shutil.copytree(root / "stage1" / "pref-01", root / "stage1" / f"pref-{i:02d}")
    exact = cfg.model_copy(update={"generate": cfg.generate.model_copy(update={"dtype": "float32"})})
    (root / "config.yaml").write_text(dump_config(exact))
    evaluate(exact, root)
    with changes_under(root) as changes:  # the run is opened read-only: only its interpolation is written
        out = interpolation_quality(root)
    written = [os.path.relpath(c.split("\t")[1], root) for c in changes]
    assert written and all(w.startswith(("evaluate/interpolation", "evaluate/.interpolation")) for w in written), written
    (row,) = out["rows"]  # only (0.5, 0.5) lies between two others
    assert row["left_out"] == "pref-01" and row["mixed_from"] == {"pref-00": 0.5, "pref-02": 0.5}
    assert row["difference"] == {"helpful": 0.0, "harmless": 0.0} and row["ci95"]["helpful"] == [0.0, 0.0]
    mixed = pd.read_parquet(root / "evaluate" / "interpolation" / "pref-01.parquet")
    trained = pd.read_parquet(root / "evaluate" / "responses.parquet").query("model == 'pref-01'")
    assert mixed.set_index("prompt_id")["response"].to_dict() == trained.set_index("prompt_id")["response"].to_dict()


def test_interpolation_quality_differences_are_paired_and_reported(tiny_run, monkeypatch):
    from paretohqd.rewards import score

    cfg, root = tiny_run
    monkeypatch.setattr(score, "write_scores", fake_score)
    evaluate(cfg, root)
    res = CliRunner().invoke(app, ["evaluate", str(root), "--interpolation"])
    assert res.exit_code == 0, res.output
    assert "interpolation quality" in res.output
    (row,) = json.loads((root / "evaluate" / "interpolation.json").read_text())["rows"]
    mixed = pd.read_parquet(root / "evaluate" / "interpolation" / "pref-01.parquet").set_index("prompt_id")
    df = pd.read_parquet(root / "evaluate" / "responses.parquet")
    trained = df[df["model"] == "pref-01"].set_index("prompt_id")
    assert mixed["model"].iloc[0] == "mix(pref-00:0.5,pref-02:0.5)"
    assert (mixed["response"] != trained.loc[mixed.index, "response"]).any()  # a different model, not a copy
    for o in OBJ:  # the paired mean difference, by hand; its interval holds it
        diff = (mixed[o] - trained.loc[mixed.index, o]).mean()
        assert row["difference"][o] == pytest.approx(diff)
        assert row["trained"][o] == pytest.approx(trained[o].mean())
        assert row["ci95"][o][0] <= row["difference"][o] <= row["ci95"][o][1]
        ends = df[df["model"].isin(["pref-00", "pref-02"])].groupby("model")[o].mean()
        assert row["neighbour_spread"][o] == pytest.approx(ends.max() - ends.min())
    report = (root / "report.md").read_text()
    assert "## Interpolation quality" in report and "pref-01 (0.5, 0.5)" in report
    assert json.loads((root / "report.json").read_text())["methods"][0]["interpolation"]["rows"] == [row]
    res = CliRunner().invoke(app, ["evaluate", str(root), "--interpolation", "--prompts", "x.txt", "--out", "o"])
    assert res.exit_code == 2 and "without --prompts/--out" in res.output


def test_samples_per_prompt_and_seed_reach_the_sampler(tmp_path, monkeypatch):
    """`evaluate.samples_per_prompt` answers to each prompt, side by side, sampled with
    `evaluate.seed` (default the run's seed); the report's per-prompt mean groups them by prompt_id."""
    from types import SimpleNamespace

    from paretohqd.config import load_config
    from paretohqd.devices import Ranks

    calls = []

    def fake_answer(cfg, tokenizer, conversations, adapter, *, seed, label, saved=None, ranks=None):
        calls.append(seed)
        return [f"{c[-1]['content']} #{i}" for i, c in enumerate(conversations)]

    monkeypatch.setattr(ev, "answer", fake_answer)
    prompts = pd.DataFrame({"prompt_id": ["a", "b"], "prompt": ["\n\nHuman: A", "\n\nHuman: B"],
                            "messages": [[{"role": "user", "content": "A"}], [{"role": "user", "content": "B"}]]})
    spec = {"model": "pref-00", "preference_index": 0, "weights": [1.0, 0.0], "adapter": None, "tag": None}
    for sets, seed, n in ([], 7, 1), (["evaluate.samples_per_prompt=3", "evaluate.seed=11"], 11, 3):
        r = SimpleNamespace(cfg=load_config(None, ["seed=7", *sets]), ranks=Ranks())
        out = tmp_path / f"{n}.parquet"
        ev._answer_model(r, None, prompts, spec, out)
        df = pd.read_parquet(out)
        assert calls[-1] == seed
        assert df["prompt_id"].tolist() == [p for p in ("a", "b") for _ in range(n)]
        assert df["response"].tolist() == [f"{c} #{i}" for i, c in enumerate(x for x in "AB" for _ in range(n))]
