"""Every error a user can cause is one clear message and exit 2 (issue 16). Each case below is a
class of bad input (config files, --set values, flags, data files, models, run folders, caches,
the disk), run through the command a user would type (or, for a few, the function that command
calls) and its message checked. The same cases, run again, write docs/reliability.md:

    python -m tests.test_bad_inputs docs/reliability.md

The damaged files a run recovers from by itself (caches, checkpoints, saved batches, step
outputs) are listed too, with the warning each prints.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    group: str
    what: str
    run: Callable[[Path, dict], tuple[int, str]]
    """(work folder, assets) -> (exit code, message)."""
    expect: str
    """A regex the message must match."""
    code: int = 2


def cli(*args: str, env: dict | None = None) -> tuple[int, str]:
    """A command in this process; the message is its `error:` text (without the prefix)."""
    from paretohqd.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args], env=env)
    text = res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in text
    return res.exit_code, text.split("error: ", 1)[1].strip() if "error: " in text else text.strip()


def call(fn: Callable[[], object]) -> tuple[int, str]:
    """A function a command calls; a user error's message, exit 2 as the command would give."""
    from paretohqd.config import ConfigError
    from paretohqd.io import InputError

    try:
        fn()
    except (ConfigError, InputError) as e:
        return 2, str(e)
    return 0, ""


def printed(fn: Callable[[], object]) -> tuple[int, str]:
    """What a recovery prints (exit 0: the run goes on)."""
    from paretohqd.progress import console

    width, console.width = console.width, 400
    try:
        with console.capture() as out:
            fn()
    finally:
        console.width = width
    return 0, next(line for line in out.get().splitlines() if line.strip())


def _file(work: Path, name: str, content: str | bytes) -> Path:
    path = work / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


def base(work: Path, a: dict) -> list[str]:
    """--set values of an offline run `run --check` passes (the tiny models of `paretohqd.testing`)."""
    return [x for s in [f"runs_dir={work / 'runs'}", f"data.sources=[{a['data']}]", f"policy.model={a['policy']}",
                        f"rewards.dir={work / 'rewards'}",
                        f"rewards.models={{helpful: {a['helpful']}, harmless: {a['harmless']}}}"] for x in ("--set", s)]


def check(work: Path, a: dict, *sets: str, config: str = "configs/demo.yaml") -> tuple[int, str]:
    return cli("run", config, *base(work, a), *[x for s in sets for x in ("--set", s)], "--check",
               env={"HF_HUB_OFFLINE": "1"})


def scores_table(work: Path) -> Path:
    df = pd.DataFrame({"id": ["a", "b", "c"], "prompt": ["\n\nHuman: hi"] * 3, "response": ["x", "y", "z"],
                       "helpful": [1.0, 2.0, 3.0], "harmless": [3.0, 2.0, 1.0]})
    path = work / "scores.parquet"
    df.to_parquet(path)
    return path


def data_table(work: Path) -> Path:
    """A table to score (no reward columns yet)."""
    path = work / "data.parquet"
    pd.read_parquet(scores_table(work)).drop(columns=["helpful", "harmless"]).to_parquet(path)
    return path


def model_folder(work: Path, a: dict, name: str, drop: tuple[str, ...] = (), weights: str = "helpful") -> str:
    folder = work / name
    shutil.copytree(a[weights], folder)
    for f in drop:
        for p in folder.glob(f):
            p.unlink()
    return str(folder)


# Cases --------------------------------------------------------------------------------------------


def _config_cases() -> list[Case]:
    def cfg(text: str | bytes) -> Callable:
        return lambda w, a: check(w, a, config=str(_file(w, "bad.yaml", text)))

    return [
        Case("config", "config file missing", lambda w, a: check(w, a, config=str(w / "nope.yaml")),
             r"nope.yaml: no such config file"),
        Case("config", "config file that is not YAML", cfg("train: [1,\n"), r"bad.yaml: not valid YAML: "),
        Case("config", "config file that is a list, not sections", cfg("- a\n- b\n"),
             r"bad.yaml: expected a mapping of sections at the top level"),
        Case("config", "config file that is not UTF-8 text", cfg(b"\xff\xfe\x00\x01"),
             r"bad.yaml: cannot read the config file \(.*can't decode"),
        Case("config", "unknown key", cfg("train:\n  stepz: 3\n"), r"train.stepz: Extra inputs are not permitted"),
        Case("config", "value of the wrong type", cfg("train:\n  steps: many\n"),
             r"train.steps: Input should be a valid integer.*\(got 'many'\)"),
        Case("config", "value out of range", cfg("train:\n  steps: 0\n"),
             r"train.steps: Input should be greater than or equal to 1 \(got 0\)"),
        Case("config", "infinite or NaN number", cfg("train:\n  lr: .inf\n"), r"train.lr: Input should be a finite number"),
        Case("config", "a section given a plain value", cfg("train: 5\n"), r"train: Input should be a valid dictionary"),
        Case("config", "several problems (all reported at once)", cfg("train:\n  steps: 0\n  lr: -1\n"),
             r"2 problem\(s\) in the config:\n  - train.steps: .*\n  - train.lr: "),
        Case("config", "NUL character in a path", cfg('rewards:\n  jokes: "a\\0b"\n'),
             r"rewards.jokes: Value error, must be plain text: no NUL character and no lone surrogate"),
        Case("config", "run name that is a path", lambda w, a: check(w, a, "name=../elsewhere"),
             r"name: Value error, must be a folder name: not empty, no / or \\, not . or .., at most 200 characters"),
        Case("config", "unknown method", lambda w, a: check(w, a, "method=paretohdq"),
             r"method: 'paretohdq' is not a method; choose one of paretohqd, stage1-only"),
        Case("config", "preference grid too large", lambda w, a: check(w, a, "select.preferences=1000000"),
             r"select.preferences: 1000000 points per axis over 2 objectives make 1,000,000 preferences, more than "
             r"100,000; use fewer points per axis"),
        Case("config", "preference of the wrong length", lambda w, a: check(w, a, "select.preferences=[[0.2, 0.3, 0.5]]"),
             r"preference 0 \[0.2, 0.3, 0.5\]: has 3 weights but there are 2 objectives"),
        Case("config", "GRPO batch that does not split into groups", lambda w, a: check(w, a, "morlhf.batch_size=6"),
             r"morlhf: Value error, batch_size \(6\) must be a multiple of num_generations \(4\)"),
    ]


def _flag_cases() -> list[Case]:
    return [
        Case("--set / flags", "--set without '='", lambda w, a: check(w, a, "train.steps"),
             r"--set 'train.steps': expected key=value, e.g. --set select.k=50"),
        Case("--set / flags", "--set value that is not YAML", lambda w, a: check(w, a, "train.steps=[1,"),
             r"--set 'train.steps=\[1,': the value is not valid YAML \(.*\); quote text"),
        Case("--set / flags", "--set into a plain value", lambda w, a: check(w, a, "seed.x=1"),
             r"--set seed.x: seed is not a section"),
        Case("--set / flags", "--set with no key", lambda w, a: check(w, a, "=5"), r"--set '=5': no key before '='"),
        Case("--set / flags", "--reward-models not objective=model",
             lambda w, a: cli("score", scores_table(w), "-r", "helpful", "--out", w / "s.parquet"),
             r"--reward-models 'helpful': expected "
             r"objective=model\[,objective=model\]"),
        Case("--set / flags", "--layers 0", lambda w, a: cli("select", scores_table(w), "--objectives", "helpful,harmless",
                                                             "--layers", "0", "--out", w / "sel"),
             r"select.layers: Value error, layers must be >= 1 or 'auto'"),
    ]


def _model_cases() -> list[Case]:
    from paretohqd.rewards.score import score_frame

    class Wrong:  # a reward model whose output is not one number per sample
        name, fingerprint = "wrong-shape", "0" * 16

        def score(self, prompts, responses, *, batch_size=32):
            import numpy as np

            return np.zeros((len(prompts), 2))

    def damaged_policy(w, a):
        from paretohqd.policy.load import load_policy

        folder = model_folder(w, a, "policy", weights="policy")
        (Path(folder) / "model.safetensors").write_bytes(b"\x00" * 100)
        return call(lambda: load_policy(folder))

    def damaged_head(w, a):
        _file(w, "heads/minilm-helpful/config.json", '{"inputs": "pair", "hid')
        _file(w, "heads/minilm-helpful/model.safetensors", b"")
        return cli("score", data_table(w), "-r", "helpful=minilm-helpful", "--out", w / "s.parquet",
                   "--set", f"rewards.dir={w / 'heads'}")

    return [
        Case("models", "policy folder without weights",
             lambda w, a: check(w, a, f"policy.model={model_folder(w, a, 'p', ('*.safetensors',), 'policy')}"),
             r"policy.model: .*/p holds no model weights \(\*.safetensors or \*.bin\); give the folder a saved model"),
        Case("models", "policy hub id that cannot be fetched (offline, gated, typo)",
             lambda w, a: check(w, a, "policy.model=nobody/no-such-model"),
             r"policy.model: cannot reach the model 'nobody/no-such-model' on the Hugging Face hub \(HF_HUB_OFFLINE is "
             r"set and it is not in the local cache\); use a local folder"),
        Case("models", "policy weights file damaged", damaged_policy, r"cannot load '.*/policy': "),
        Case("models", "reward model folder without config.json",
             lambda w, a: check(w, a, f"rewards.models.helpful={model_folder(w, a, 'r', ('config.json',))}"),
             r"rewards.models.helpful: reward model folder .*/r has no config.json"),
        Case("models", "reward model folder without weights",
             lambda w, a: check(w, a, f"rewards.models.helpful={model_folder(w, a, 'r', ('*.safetensors',))}"),
             r"rewards.models.helpful: reward model folder .*/r holds no weights \(\*.safetensors or \*.bin\)"),
        Case("models", "reward model that is a language model",
             lambda w, a: check(w, a, f"rewards.models.helpful={a['policy']}"),
             r"reward model '.*policy' is a LlamaForCausalLM, not a sequence classifier: its score head would be random"),
        Case("models", "reward model name that is nothing known",
             lambda w, a: check(w, a, "rewards.models.helpful=minilm-helpfull"),
             r"rewards.models.helpful: unknown reward model 'minilm-helpfull': not a preset, offline head, folder or hub id"),
        Case("models", "reward model output of the wrong shape",
             lambda w, a: call(lambda: score_frame(pd.read_parquet(scores_table(w)).drop(columns=["helpful", "harmless"]),
                                                   {"helpful": Wrong()}, cache_dir=w / "cache", progress=False)),
             r"reward model 'wrong-shape' \(objective 'helpful'\) returned float64 scores of shape \(3, 2\) for 3 "
             r"samples; a reward model gives one number per sample"),
        Case("models", "reward logit index out of range",
             lambda w, a: cli("score", data_table(w), "-r", f"helpful={a['helpful']}", "--out", w / "s.parquet",
                              "--set", "rewards.logit=3", "--set", f"rewards.dir={w / 'rw'}"),
             r"reward model '.*rm-helpful' has 1 logit\(s\); logit index 3 is out of range \(rewards.logit\)"),
        Case("models", "offline reward head damaged", damaged_head,
             r"reward head .*/minilm-helpful cannot be read \(.*\); delete the folder and it is trained again"),
    ]


def _data_cases() -> list[Case]:
    def select(path: Path) -> tuple[int, str]:
        return cli("select", path, "--objectives", "helpful,harmless", "--out", path.parent / "sel")

    return [
        Case("data", "Parquet file that is really CSV", lambda w, a: select(_file(w, "s.parquet", "id,helpful\na,1\n")),
             r"s.parquet: cannot read as a parquet table \(.*\); is it the format its extension says\?"),
        Case("data", "JSONL file that is not JSON lines", lambda w, a: select(_file(w, "s.jsonl", "{oops\n")),
             r"s.jsonl: cannot read as a jsonl table \(.*\); is it the format its extension says\?"),
        Case("data", "table in an unknown format", lambda w, a: select(_file(w, "s.txt", "x")),
             r"s.txt: unknown table format; use .parquet, .csv or .jsonl"),
        Case("data", "table to score without a response column",
             lambda w, a: cli("score", _file(w, "d.jsonl", '{"id": "a", "prompt": "p"}\n'), "-r",
                              f"helpful={a['helpful']}", "--out", w / "o.parquet", "--set", f"rewards.dir={w / 'rw'}"),
             r"table to score lacks column\(s\) \['response'\]"),
        Case("data", "objective column that is not numeric",
             lambda w, a: select(_file(w, "s.jsonl", '{"id": "a", "helpful": "high", "harmless": 1}\n')),
             r"s.jsonl: .*helpful"),
        Case("data", "HH source that does not exist", lambda w, a: check(w, a, f"data.sources=[{w / 'no-such-dir'}]"),
             r"data.sources: .*/no-such-dir: no such file or folder \(and not the hub id 'Anthropic/hh-rlhf'\)"),
        Case("data", "HH file with a row that is not JSON",
             lambda w, a: cli("data", "prepare", _file(w, "hh.jsonl", '{"chosen": "x"\n'), "--out", w / "o.parquet",
                              "--set", f"policy.model={a['policy']}"),
             r"hh.jsonl:1: malformed JSON \(.*\)"),
        Case("data", "HH .jsonl.gz that is not gzip",
             lambda w, a: cli("data", "prepare", _file(w, "hh.jsonl.gz", "plain text"), "--out", w / "o.parquet",
                              "--set", f"policy.model={a['policy']}"),
             r"hh.jsonl.gz: cannot read: Not a gzipped file"),
    ]


def _run_folder_cases() -> list[Case]:
    def made_with(w, a, *sets):
        from paretohqd.config import load_config
        from paretohqd.runfolder import RunFolder

        RunFolder(load_config("configs/demo.yaml", [s for s in base(w, a) if s != "--set"] + list(sets)))

    def other_config(w, a):
        made_with(w, a, "select.k=7")
        return check(w, a)

    def damaged(name: str, content: bytes, *args: str):
        def run(w, a):
            made_with(w, a)
            (w / "runs" / "demo" / name).write_bytes(content)
            return cli("run", "configs/demo.yaml", *base(w, a), *args, env={"HF_HUB_OFFLINE": "1"})
        return run

    def busy(w, a):
        from paretohqd.lock import hold

        holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom paretohqd.lock import hold\n"
                                   "with hold(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
                                   str(w / "runs" / "demo")], cwd=REPO, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held" and hold
            return cli("run", "configs/demo.yaml", *base(w, a), env={"HF_HUB_OFFLINE": "1"})
        finally:
            holder.kill()
            holder.wait()

    def unprepared(w, a):
        made_with(w, a)
        return cli("evaluate", w / "runs" / "demo")

    return [
        Case("run folders", "run folder another process is writing", busy,
             r"runs/demo is in use by pid \d+, running since .*; one process writes a folder at a time"),
        Case("run folders", "run folder made with another config", other_config,
             r"name: .*runs/demo was made with another config \(differs in: select.k\); resume with the same config, "
             r"or start a new run with --set name=NEW"),
        Case("run folders", "manifest.json damaged", damaged("manifest.json", b'{"steps": {"prep'),
             r"runs/demo/manifest.json cannot be read \(.*\); it records which steps finished and checksums of their "
             r"files. Restore it, or delete it"),
        Case("run folders", "config.yaml of the run damaged", damaged("config.yaml", b"\xff\xfe"),
             r"runs/demo/config.yaml cannot be read \(.*\); it is the config this run was made with: restore it, or "
             r"delete it to take the config you gave"),
        Case("run folders", "evaluating a run that was never prepared", unprepared,
             r"runs/demo/data/heldout.parquet: no such file; the prepare step of `paretohqd run` writes it"),
    ]


def _disk_cases() -> list[Case]:
    def full(w, a):
        real = pd.DataFrame.to_parquet

        def fill(self, path, *args, **kw):
            Path(path).write_bytes(b"\0" * 2048)
            raise OSError(errno.ENOSPC, "No space left on device")

        table = data_table(w)
        pd.DataFrame.to_parquet = fill
        try:
            return cli("score", table, "-r", f"helpful={a['helpful']}", "--out", w / "out.parquet",
                       "--set", f"rewards.dir={w / 'rw'}")
        finally:
            pd.DataFrame.to_parquet = real

    return [
        Case("disk", "full disk", full, r"no space left on the device writing .*/rw/scores/\w+/chunk-\d+-\d+.parquet "
             r"\(it needed more than the 2.0 kB written before the disk filled; .* free there now\); free some space "
             r"and rerun: finished steps are kept, and this one is redone"),
        Case("disk", "output path under a file", lambda w, a: cli("select", scores_table(w), "--objectives", "helpful,harmless",
                                                                  "--k", "1", "--out", _file(w, "f", "") / "sel"),
             r"\[Errno 20\] Not a directory: '.*/f/sel'"),
    ]


def _recovered_cases() -> list[Case]:
    """Damaged files a run discards (with a warning naming them) and makes again: exit 0."""
    def chunk(w, a):
        from paretohqd.rewards.score import ScoreCache

        f = _file(w, "cache/chunk-1-1.parquet", b"PAR1 garbage PAR1")
        return printed(lambda: ScoreCache(f.parent).load())

    def embeddings(w, a):
        from paretohqd.rewards.minilm import EmbeddingStore

        f = _file(w, "emb/emb-1-1.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
        return printed(lambda: EmbeddingStore(f.parent))

    def checkpoint(w, a):
        import torch
        from safetensors.torch import save_file

        from paretohqd.io import file_digest
        from paretohqd.policy.sft import load_checkpoint

        ckpt = w / "stage1" / "pref-00.ckpt"
        (ckpt / "model").mkdir(parents=True)
        save_file({"w": torch.zeros(4)}, ckpt / "model" / "model.safetensors")
        torch.save({"optimizer": {}, "scheduler": {}}, ckpt / "optimizer.pt")
        files = {f: file_digest(ckpt / f) for f in ("model/model.safetensors", "optimizer.pt")}
        _file(w, "stage1/pref-00.ckpt/state.json", json.dumps({"step": 2, "files": files}))
        data = bytearray((ckpt / "optimizer.pt").read_bytes())
        data[len(data) // 2] ^= 0xFF  # garbled on disk
        (ckpt / "optimizer.pt").write_bytes(bytes(data))
        return printed(lambda: load_checkpoint(ckpt, torch.nn.Linear(2, 2), None, None))

    def batch(w, a):
        from paretohqd.policy.generate import _read_batch

        f = _file(w, "stage2/.generated-pref-00.batches/batch-00000.parquet", b"not parquet")
        return printed(lambda: _read_batch(f, ["k"]))

    def step_output(w, a):
        from paretohqd.config import Config
        from paretohqd.io import write_json
        from paretohqd.runfolder import RunFolder

        r = RunFolder(Config(name="r", runs_dir=str(w)))
        r.step("select", r.path("stage1", "selection.json"), lambda: write_json({"k": 1}, r.path("stage1", "selection.json")))
        r.path("stage1", "selection.json").write_text('{"k": 2}\n')
        return printed(lambda: RunFolder(r.cfg).step("select", r.path("stage1", "selection.json"),
                                                     lambda: write_json({"k": 1}, r.path("stage1", "selection.json"))))

    def swap(w, a):
        from paretohqd.config import Config
        from paretohqd.runfolder import RunFolder

        _file(w, "r/stage1/.pref-00.old/adapter_model.safetensors", b"x")
        return printed(lambda: RunFolder(Config(name="r", runs_dir=str(w))))

    return [
        Case("recovered", "score cache file damaged", chunk, r"warning: discarding score cache file .*chunk-1-1.parquet, "
             r"which cannot be read \(.*\); its samples are scored again", 0),
        Case("recovered", "embedding cache file damaged", embeddings, r"warning: discarding embedding cache file "
             r".*emb-1-1.safetensors, which cannot be read \(.*\); its texts are embedded again", 0),
        Case("recovered", "training checkpoint damaged", checkpoint, r"warning: discarding checkpoint .*pref-00.ckpt, "
             r"which cannot be read \(optimizer.pt differs from its record\); training from step 0", 0),
        Case("recovered", "saved generation batch damaged", batch, r"warning: discarding saved answers .*batch-00000.parquet "
             r"\(cannot be read\); answering again", 0),
        Case("recovered", "a finished step's output changed", step_output, r"redo select: stage1/selection.json has "
             r"changed \(9 bytes, 13 when written\); doing it again", 0),
        Case("recovered", "a folder replacement cut short by a kill", swap, r"recovered .*r/stage1/pref-00 \(a replacement "
             r"of it was interrupted\)", 0),
    ]


def cases() -> list[Case]:
    return [*_config_cases(), *_flag_cases(), *_model_cases(), *_data_cases(), *_run_folder_cases(), *_disk_cases(),
            *_recovered_cases()]


CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input_is_one_message_and_exit_2(case, tmp_path, chaos_assets, monkeypatch):
    monkeypatch.chdir(REPO)
    before = {p.name for p in REPO.iterdir()}
    code, message = case.run(tmp_path, chaos_assets)
    assert {p.name for p in REPO.iterdir()} == before  # nothing written beside the code
    assert code == case.code, message
    assert re.search(case.expect, message), message
    head, *problems = message.splitlines()
    # one line; a config error (or the checks before a run) lists every problem, one line each
    assert not problems or (re.search(r"\d+ problem\(s\)", head) and all(p.startswith("  - ") for p in problems))


def test_at_least_30_error_classes_and_the_doc_lists_them_all():
    errors = [c for c in CASES if c.code == 2]
    assert len(errors) >= 30
    doc = (REPO / "docs" / "reliability.md").read_text()
    for case in CASES:
        assert f"| {case.what} |" in doc, case.what


# docs/reliability.md ------------------------------------------------------------------------------


def write_doc(out: Path) -> None:
    import tempfile

    from paretohqd.testing import tiny_assets

    work = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    a = tiny_assets(work / "assets")
    rows: dict[str, list[str]] = {}
    for i, case in enumerate(CASES):
        folder = work / f"case-{i:02d}"
        folder.mkdir()
        code, message = case.run(folder, a)
        assert code == case.code and re.search(case.expect, message), (case.what, message)
        shown = message.replace(str(folder), "WORK").replace(str(work / "assets"), "ASSETS").replace("\n", "<br>")
        rows.setdefault(case.group, []).append(f"| {case.what} | {code} | `{shown.replace('|', '/')}` |")
    # the hand-written part above the generated tables (what a kill, a second process, ... do) stays
    kept = out.read_text().split(HEADER.splitlines()[0])[0] if out.exists() else ""
    text = [kept + HEADER]
    for group, lines in rows.items():
        what = "line it prints" if group == "recovered" else "message (as printed after `error: `)"
        text += [f"\n### {group}\n", f"| bad input | exit | {what} |", "|---|---|---|", *lines]
    out.write_text("\n".join(text) + "\n" + FOOTER)
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out}: {sum(c.code == 2 for c in CASES)} error classes, {sum(c.code == 0 for c in CASES)} recovered")


HEADER = """# Reliability: what a user can get wrong, and what the machine can do to a run

Generated by `python -m tests.test_bad_inputs docs/reliability.md`: every message below is the one
the command printed when the case was run (paths shortened to WORK and ASSETS); `tests/test_bad_inputs.py`
runs the same cases in `make test` and checks each message. Every error is one line on stderr, with
exit code 2 and no traceback (a config error lists every problem, one line each). The last table
lists damaged files that a run recovers from by itself (exit 0), with the line it prints.

What a kill, a second process, a damaged file and a full disk do is summarised at the top of
this page; how it is tested: `tests/test_lock.py`, `tests/test_runfolder.py`,
`tests/test_reliability.py`, `tests/test_io.py`, `tests/test_config_fuzz.py`, `tests/test_chaos.py`
and `benchmarks/chaos.py`.
"""

FOOTER = """
### serve (HTTP)

`paretohqd serve` answers each bad request with an OpenAI-style error body
(`{"error": {"message", "type", "param", "code"}}`) and goes on serving; checked in
`tests/test_serve.py` and `tests/test_serve_limits.py`. Defaults: `--max-body` 1 MiB,
`--max-tokens` 1024, `--max-queue` 64, `--timeout` 300 s, `--cache` 4.

| bad input | status | answer (the error's message) |
|---|---|---|
| request body over `--max-body` (declared or chunked) | 413 | `the request body is larger than 1,048,576 bytes (paretohqd serve --max-body); send fewer or shorter messages` |
| more than 4 stop strings | 400 | `stop: Value error, 5 stop strings; give at most 4` |
| an empty stop string | 400 | `stop: Value error, a stop string is empty; give non-empty strings` |
| a stop string over 64 characters | 400 | `stop: Value error, a stop string has 65 characters; give at most 64` |
| seed of 2**63 or more | 400 | `seed: Input should be less than 9223372036854775808` |
| negative seed | 400 | `seed: Input should be greater than or equal to 0` |
| max_tokens over `--max-tokens` | 400 | `max_tokens: 1025 tokens asked for; this server generates at most 1024 per request (paretohqd serve --max-tokens); ask for fewer` |
| prompt plus max_tokens over the model's context | 400 | `This model's maximum context length is 1024 tokens; the prompt has 1010 tokens and max_tokens asks for 20, so the prompt may have at most 1004; shorten the messages or lower max_tokens` |
| unknown model | 404 | `The model 'pref-09' does not exist; this run serves pref-00, pref-01, pref-02, base, or any preference as w=W1,W2,... (objectives helpful, harmless)` |
| `w=` weights off the simplex | 400 | `model 'w=0.5,0.6': weights 0.5,0.6 sum to 1.1; give non-negative weights summing to 1, one per objective (helpful, harmless), e.g. 0.5,0.5` |
| 200 distinct `w` in one burst | 200 / 429 | each `w` rounded to 1e-3; a batch builds at most `--cache` mixes, the rest wait for later batches (memory stays that of `--cache` mixes); requests beyond `--max-queue` waiting get the 429 below |
| overload: `--max-queue` requests already waiting | 429, `Retry-After` | `The server is busy: 64 requests are waiting (paretohqd serve --max-queue 64); retry after 2 s` |
| answer not done within `--timeout` | 504 | `the answer took longer than 300 s (paretohqd serve --timeout); ask for fewer tokens or retry when the server is less busy` (a stream that has begun: its last event) |
| client disconnects mid-stream or before its answer | - | nothing sent; its row leaves the decoding batch at the next token (a queued job leaves the queue); the other rows answer as before |
| wrong or missing API key | 401 | `Incorrect API key provided; send it as the header 'Authorization: Bearer KEY' (the key given to paretohqd serve --api-key)` |
| keyless server, Host header not localhost / 127.0.0.1 / [::1] with its port (DNS rebinding) | 421 | `Host 'evil.example:8000' is not this server: a keyless server answers requests to localhost, 127.0.0.1 or [::1] with its port only; use one of those (or serve with --api-key)` |
| a failure inside the server | 500 | `internal error (request id req-3f2a9c1b7e04); the server log has the details` (the exception and traceback only in the log, under that id) |
| `paretohqd serve RUN --api-key ""` | exit 2 | `--api-key is empty; give a key, or leave --api-key out to serve keyless on this machine only` |
| `paretohqd serve RUN --host 0.0.0.0` without a key | exit 2 | `--host 0.0.0.0 without --api-key: anyone who reaches this port could use it; give --api-key KEY (or PARETOHQD_API_KEY), or bind 127.0.0.1` |

Also checked elsewhere: fuzzed YAML files and `--set` values of every key of every section
(`tests/test_config_fuzz.py`, hypothesis) load or end in one ConfigError, and `paretohqd run --check`
on fuzzed overrides exits 0 or 2 without a traceback. Errors the machine raises that are not listed
(a permission denied, a name too long for the file system, a network error) end the same way:
`error: ` and the operating system's message naming the file, exit 2.
"""


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.chdir(REPO)
    write_doc(Path(sys.argv[1]))
