"""Using a trained run's models (`paretohqd.load`, `paretohqd generate`, `paretohqd export`) on tiny
run folders built by hand: a random 2-layer Llama (real SmolLM2 tokenizer) with random LoRA
adapters as the preference models, as `paretohqd run` leaves them."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import paretohqd
from paretohqd.cli import app
from paretohqd.config import Config, GenerateConfig, PolicyConfig, dump_config
from paretohqd.io import InputError, write_json
from paretohqd.methods.ric import desired_rewards, reward_tag
from paretohqd.pareto.preferences import simplex_grid
from paretohqd.pareto.simplex import barycentric
from paretohqd.policy.generate import answer, generate, load_for_generation
from paretohqd.policy.load import load_tokenizer
from paretohqd.policy.prompts import resolve_format
from paretohqd.runfolder import FinalModel
from paretohqd.use import one_model

GREEDY = ["generate.temperature=0", "generate.max_new_tokens=6"]


def make_run(root, policy: str, objectives: list[str], points: int, *, method: str = "paretohqd") -> Config:
    """A finished run folder: config.yaml and one random LoRA adapter per preference (or RiC's one
    model and its reward stats)."""
    from paretohqd.policy.sft import build_model

    models = {}
    for name in objectives:  # local folders stand in for reward models; nothing here scores
        (root.parent / f"rm-{name}").mkdir(parents=True, exist_ok=True)
        (root.parent / f"rm-{name}" / "config.json").write_text("{}")
        (root.parent / f"rm-{name}" / "model.safetensors").write_bytes(b"")  # preflight asks for weights
        models[name] = str(root.parent / f"rm-{name}")
    cfg = Config(name=root.name, runs_dir=str(root.parent), seed=3, method=method, policy={"model": policy},
                 rewards={"models": models}, select={"preferences": points, "k": 2}, stage2={"enabled": False},
                 train={"lora_r": 2, "lora_alpha": 4, "lora_targets": ["q_proj", "v_proj"]},
                 generate={"max_new_tokens": 6, "batch_size": 4})
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(dump_config(cfg))
    folders = [root / "ric" / "model"] if method == "ric" else \
        [root / "stage1" / f"pref-{i:02d}" for i in range(len(simplex_grid(len(objectives), points)))]
    for i, out in enumerate(folders):
        model = build_model(PolicyConfig(model=policy), cfg.train)
        torch.manual_seed(i)
        for name, p in model.named_parameters():
            if "lora_B" in name:  # fresh LoRA B is zero; make each adapter change the model
                torch.nn.init.normal_(p, std=0.5)
        model.save_pretrained(out)
        write_json({"steps": 0}, out / "train.json")
    if method == "ric":
        write_json({"objectives": objectives, "mean": [0.0] * len(objectives), "std": [1.0] * len(objectives),
                    "lo": [-2.0] * len(objectives), "hi": [2.0] * len(objectives)}, root / "ric" / "rewards.json")
    return cfg


@pytest.fixture(scope="module")
def run2(tmp_path_factory, tiny_policy):
    """Two objectives, 3 preferences: (0, 1), (0.5, 0.5), (1, 0)."""
    root = tmp_path_factory.mktemp("use") / "two"
    return make_run(root, tiny_policy, ["helpful", "harmless"], 3), root


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _trained(cfg, root, i) -> dict[str, torch.Tensor]:
    # float32: the exactness checks are about the mix, not bf16 sampling weights
    return _weights(load_for_generation(cfg.policy, root / "stage1" / f"pref-{i:02d}", dtype="float32"))


# Any preference ----------------------------------------------------------------------------------


def test_load_grid_point_is_the_trained_model_and_midpoint_the_exact_mix(run2):
    cfg, root = run2
    base = _weights(load_for_generation(cfg.policy, None, dtype="float32"))
    one, two = _trained(cfg, root, 1), _trained(cfg, root, 2)

    model, tokenizer = paretohqd.load(root, [0.5, 0.5], dtype="float32")  # unpacks as a pair
    assert tokenizer.eos_token is not None
    assert all(torch.equal(v, one[k]) for k, v in model.state_dict().items())  # bit for bit

    loaded = paretohqd.load(root, "0.75,0.25", dtype="float32")  # between pref-01 (0.5) and pref-02 (1.0)
    assert loaded.name == "mix(pref-01:0.5,pref-02:0.5)" and loaded.tag is None
    mixed = _weights(loaded.model)
    changed = [k for k in base if not torch.equal(one[k], base[k])]
    assert changed  # the adapters change weights, so the checks are not vacuous
    for k in base:
        torch.testing.assert_close(mixed[k], base[k] + ((one[k] - base[k]) + (two[k] - base[k])) / 2,
                                   rtol=1e-5, atol=1e-6)
    assert not torch.equal(mixed[changed[0]], one[changed[0]])


def test_three_objectives_mix_the_grid_cell_barycentrically(tmp_path, tiny_policy):
    root = tmp_path / "three"
    cfg = make_run(root, tiny_policy, ["helpful", "harmless", "humor"], 3)  # 6 preferences, step 0.5
    prefs = simplex_grid(3, 3)
    w = np.array([0.1, 0.6, 0.3])  # in the cell (0, .5, .5), (0, 1, 0), (.5, .5, 0) with weights .6, .2, .2
    cell = {tuple(prefs[i]): lam for i, lam in barycentric(prefs, w)}
    assert cell == pytest.approx({(0.0, 0.5, 0.5): 0.6, (0.0, 1.0, 0.0): 0.2, (0.5, 0.5, 0.0): 0.2})
    loaded = paretohqd.load(root, w, dtype="float32")
    base = _weights(load_for_generation(cfg.policy, None, dtype="float32"))
    expected = {k: v.clone() for k, v in base.items()}
    for vertex, lam in cell.items():
        trained = _trained(cfg, root, int(np.abs(prefs - vertex).max(axis=1).argmin()))
        for k in base:
            expected[k] += lam * (trained[k] - base[k])
    mixed = _weights(loaded.model)
    for k in base:
        torch.testing.assert_close(mixed[k], expected[k], rtol=1e-5, atol=1e-6)
    assert loaded.name.startswith("mix(") and loaded.name.count(":") == 3


def test_bad_weights_and_unfinished_runs_are_one_line_errors(run2, tmp_path):
    cfg, root = run2
    for weights, match in [([0.5, 0.6], r"sum to 1\.1; .*\(helpful, harmless\)"),
                           ([0.2, 0.3, 0.5], r"3 weights for 2 objectives; .*\(helpful, harmless\)"),
                           ([-0.5, 1.5], "negative"), ("a,b", "not numbers")]:
        with pytest.raises(InputError, match=match) as e:
            paretohqd.load(root, weights)
        assert "\n" not in str(e.value)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(root, unfinished)
    (unfinished / "stage1" / "pref-02" / "train.json").unlink()
    with pytest.raises(InputError, match=r"run not finished \(2 of 3 preference models trained; missing pref-02\)"):
        paretohqd.load(unfinished, [0.5, 0.5])
    with pytest.raises(InputError, match="no config.yaml"):
        paretohqd.load(tmp_path, [0.5, 0.5])


def test_ric_preference_is_its_tag(tmp_path, tiny_policy):
    root = tmp_path / "ric"
    make_run(root, tiny_policy, ["helpful", "harmless"], 3, method="ric")
    loaded = paretohqd.load(root, [0.3, 0.7])
    assert loaded.name == "ric(0.3,0.7)"
    assert loaded.tag == reward_tag(["helpful", "harmless"], desired_rewards([0.3, 0.7], [-2, -2], [2, 2]))
    assert paretohqd.load(root, [0.5, 0.5]).name == "pref-01"


def test_one_model_for_every_preference_is_a_property_of_the_final_models(tmp_path):
    """`one_model` reads the final models, not the method's name: one folder that tags any preference."""
    w = simplex_grid(2, 3)
    tagged = [FinalModel(f"pref-0{i}", x, tmp_path / "m", tmp_path / "m" / "train.json", "t",
                         tag_for=lambda v: f"tag {v[0]:g}") for i, x in enumerate(w)]
    assert one_model(tagged)
    assert not one_model(tagged[:1] + [replace(tagged[1], tag_for=None)])  # a model that tags no other preference
    own = [FinalModel(f"pref-0{i}", x, tmp_path / f"p{i}", tmp_path / f"p{i}" / "train.json") for i, x in enumerate(w)]
    assert not one_model(own) and not one_model(own[:1])  # a lone trained model answers only its own preference


# generate ----------------------------------------------------------------------------------------


def test_generate_cli_answers_like_the_evaluation(run2, tmp_path):
    cfg, root = run2
    runner = CliRunner()
    prompts = ["What is a llama?", "How do I bake bread?", "Tell me a joke."]
    (tmp_path / "prompts.txt").write_text("\n".join([prompts[0], "", *prompts[1:]]) + "\n")
    out = tmp_path / "answers.jsonl"
    res = runner.invoke(app, ["generate", str(root), "--weights", "0.5,0.5", "--prompts", str(tmp_path / "prompts.txt"),
                              "--out", str(out), *[x for s in GREEDY for x in ("--set", s)]])
    assert res.exit_code == 0, res.output
    df = pd.read_json(out, lines=True)
    assert list(df.columns) == ["prompt", "response", "weights", "model"]
    assert df["prompt"].tolist() == prompts and (df["model"] == "pref-01").all()
    assert df["weights"].iloc[0] == [0.5, 0.5]
    # the same answers as the run's own evaluation path with that adapter
    greedy = cfg.model_copy(update={"generate": cfg.generate.model_copy(update={"temperature": 0.0})})
    tok = load_tokenizer(cfg.policy.model)
    expected = answer(greedy, tok, [[{"role": "user", "content": p}] for p in prompts],
                      root / "stage1" / "pref-01", seed=cfg.seed, label="expected")
    assert df["response"].tolist() == expected

    res = runner.invoke(app, ["generate", str(root), "-w", "0.25,0.75", "--prompt", prompts[0],
                              "--out", str(tmp_path / "one.csv"), *[x for s in GREEDY for x in ("--set", s)]])
    assert res.exit_code == 0, res.output
    one = pd.read_csv(tmp_path / "one.csv")
    assert one["model"].tolist() == ["mix(pref-00:0.5,pref-01:0.5)"] and one["weights"].tolist() == ["0.25,0.75"]
    res = runner.invoke(app, ["generate", str(root), "-w", "0.5,0.5", "--prompt", prompts[0]])
    assert res.exit_code == 0 and "What is a llama?" in res.output  # printed as a table


def test_generate_cli_bad_input_is_one_line(run2, tmp_path):
    _, root = run2
    runner = CliRunner()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": oops}\n')
    cases = [(["--prompts", str(bad)], f"{bad}:2: not JSON"),
             (["--prompts", str(tmp_path / "p.jsonl")], "no such file"),
             (["--prompt", "hi", "--set", "train.steps=3"], "only generate.* keys"),
             (["--prompt", "hi", "--out", str(tmp_path / "x.xlsx")], "unknown table format"),
             ([], "exactly one of --prompt TEXT or --prompts FILE")]
    (tmp_path / "nomsg.jsonl").write_text('{"text": "hi"}\n')
    cases.append((["--prompts", str(tmp_path / "nomsg.jsonl")], f"{tmp_path / 'nomsg.jsonl'}:1: no prompt"))
    for extra, message in cases:
        res = runner.invoke(app, ["generate", str(root), "-w", "0.5,0.5", *extra])
        assert res.exit_code == 2, (extra, res.output)
        assert message in res.output and res.output.count("\n") == 1, res.output


# export ------------------------------------------------------------------------------------------


def test_export_merged_models_load_with_plain_transformers(run2, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, root = run2
    out = tmp_path / "export"
    res = CliRunner().invoke(app, ["export", str(root), "--out", str(out), "--merged", "--weights", "0.25,0.75"])
    assert res.exit_code == 0, res.output
    names = ["pref-00", "pref-01", "pref-02", "w-0.25-0.75"]
    modules = json.loads((out / "lora-modules.json").read_text())
    assert [m["name"] for m in modules] == names
    script = (out / "vllm-serve.sh").read_text()
    assert "vllm serve " in script and "--enable-lora" in script and "--max-lora-rank 8" in script  # rank 2+2 -> 8
    assert all(f'{n}="$HERE"/{n}' in script for n in names)
    card = (out / "pref-01" / "README.md").read_text()
    assert "helpful 0.5, harmless 0.5" in card and cfg.policy.model in card and "report.json" in card
    assert (out / "pref-01" / "adapter_model.safetensors").read_bytes() == \
        (root / "stage1" / "pref-01" / "adapter_model.safetensors").read_bytes()
    assert json.loads((out / "w-0.25-0.75" / "merge.json").read_text())["mixed"] == {"pref-00": 0.5, "pref-01": 0.5}

    gen = GenerateConfig(temperature=0, max_new_tokens=6)
    convs = [[{"role": "user", "content": "What is a llama?"}], [{"role": "user", "content": "Say hello."}]]
    for name, adapter_model in [("pref-01", load_for_generation(cfg.policy, root / "stage1" / "pref-01", dtype="float32")),
                                ("w-0.25-0.75", paretohqd.load(root, [0.25, 0.75], dtype="float32").model)]:
        plain = AutoModelForCausalLM.from_pretrained(out / "merged" / name).eval()
        tok = AutoTokenizer.from_pretrained(out / "merged" / name)
        fmt = resolve_format(tok, cfg.policy.prompt_format)
        expected, _ = generate(adapter_model, tok, convs, gen, seed=0, fmt=fmt)
        got, _ = generate(plain, tok, convs, gen, seed=0, fmt=fmt)
        assert got == expected, name
        # and the adapter folder loads with PEFT onto the base to the same weights
        from peft import PeftModel

        from paretohqd.policy.load import load_policy

        via_adapter = PeftModel.from_pretrained(load_policy(cfg.policy.model), str(out / name)).merge_and_unload()
        for k, v in via_adapter.state_dict().items():
            torch.testing.assert_close(v, plain.state_dict()[k], rtol=1e-5, atol=1e-6)


def test_export_card_states_the_runs_evaluation(run2, tmp_path):
    cfg, root = run2
    run = tmp_path / "evaluated"
    shutil.copytree(root, run)
    row = {"model": "pref-01", "n": 4, "mean": {"helpful": 1.25, "harmless": -0.5},
           "ci95": {"helpful": [1.0, 1.5], "harmless": [-0.75, -0.25]}, "collapse_rate": 0.25}
    write_json({"methods": [{"folder": str(run), "models": [row], "hypervolume": 0.1234}]}, run / "report.json")
    res = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    card = (tmp_path / "out" / "pref-01" / "README.md").read_text()
    rm = cfg.rewards.models
    assert f"| helpful | {rm['helpful']} | 1.2500 | 1.0000 .. 1.5000 |" in card
    assert f"| harmless | {rm['harmless']} | -0.5000 |" in card
    assert "Collapse rate 25.0%" in card and "together: 0.1234" in card
    assert "Not evaluated" in (tmp_path / "out" / "pref-00" / "README.md").read_text()  # no row for it
    assert not (tmp_path / "out" / "merged").exists()
