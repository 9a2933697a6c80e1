"""Reading a finished run changes nothing in it (`serve`, `generate`, `export`, `paretohqd.load`),
readers and writers exclude each other (`lock.hold(shared=True)`), a run's own
`trust_remote_code: true` is asked for, and `export --out` never destroys what it did not write.
On hand-built runs (`test_use.make_run`): a random 2-layer Llama with random LoRA adapters."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import paretohqd
from audit_writes import changes_under, tree
from paretohqd.cli import app
from paretohqd.io import InputError
from paretohqd.lock import BusyError, hold, lock_file
from paretohqd.export import EXPORT_MARKER, _write_serving
from test_use import make_run

REPO = Path(__file__).resolve().parents[1]
HOLDER = """
import sys, time
from paretohqd.lock import hold
with hold(sys.argv[1], shared=sys.argv[2] == "read"):
    print("held", flush=True)
    time.sleep(60)
"""
GREEDY = ["--set", "generate.temperature=0", "--set", "generate.max_new_tokens=3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_policy) -> Path:
    """Two objectives, 3 trained preferences."""
    root = tmp_path_factory.mktemp("readers") / "run"
    make_run(root, tiny_policy, ["helpful", "harmless"], 3)
    return root


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs" / run.name
    shutil.copytree(run, copy)
    return copy


def _one_line_error(res, *parts: str) -> None:
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.output.count("\n") == 1 and res.output.startswith("error: "), res.output
    for part in parts:
        assert part in res.output, (part, res.output)


def _holder(folder: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), mode], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


# Read-only ---------------------------------------------------------------------------------------


def test_readers_change_nothing_in_a_read_only_run(run, tmp_path, monkeypatch):
    """load, generate, export and serve on a `chmod -R a-w` copy: they work, and (since root writes
    anyway) no write, rename or delete reaches the folder and its tree is byte- and mtime-identical."""
    import httpx2 as httpx
    import uvicorn
    from serving import Running

    ro = _copy(run, tmp_path)
    subprocess.run(["chmod", "-R", "a-w", str(ro)], check=True)
    before = tree(ro)
    answered = []

    def uvicorn_run(app_, **_):  # `paretohqd serve`, one request, then stop
        with Running(app_) as port:
            res = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=120, json={
                "model": "w=0.25,0.75", "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]})
            answered.append(res.status_code)
            # `paretohqd run` meanwhile is told who reads the folder
            with pytest.raises(BusyError, match=rf"{ro} is being read by pid {os.getpid()}, .*stop the reader"):
                _writer_in_another_process(ro)

    monkeypatch.setattr(uvicorn, "run", uvicorn_run)
    runner = CliRunner()
    try:
        with changes_under(ro) as changes:
            assert paretohqd.load(ro, [0.25, 0.75]).name == "mix(pref-00:0.5,pref-01:0.5)"
            res = runner.invoke(app, ["generate", str(ro), "-w", "0.5,0.5", "--prompt", "Hi", *GREEDY,
                                      "--out", str(tmp_path / "answers.jsonl")])
            assert res.exit_code == 0, res.output
            res = runner.invoke(app, ["export", str(ro), "--out", str(tmp_path / "export"), "-w", "0.25,0.75"])
            assert res.exit_code == 0, res.output
            res = runner.invoke(app, ["serve", str(ro)])
            assert res.exit_code == 0, res.output
        assert answered == [200]
        assert changes == []
        assert tree(ro) == before
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(ro)], check=True)


def _writer_in_another_process(folder: Path) -> None:
    code = "import sys; from paretohqd.lock import hold\nwith hold(sys.argv[1]): pass"
    res = subprocess.run([sys.executable, "-c", code, str(folder)], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    if res.returncode:
        raise BusyError(res.stderr.strip().splitlines()[-1].removeprefix("paretohqd.lock.BusyError: "))


def test_a_reader_names_an_interrupted_swap_and_leaves_it(run, tmp_path):
    root = _copy(run, tmp_path)
    aside = root / "stage1" / ".pref-01.old"  # `io.atomic_dir` was replacing stage1/pref-01
    shutil.copytree(root / "stage1" / "pref-01", aside)
    before = tree(root)
    message = (f"run {root} is being written (or was interrupted; {root / 'stage1' / 'pref-01'} is half replaced): "
               f"run `paretohqd run {root / 'config.yaml'}` to finish it")
    with pytest.raises(InputError) as e:
        paretohqd.load(root, [0.5, 0.5])
    assert str(e.value) == message
    _one_line_error(CliRunner().invoke(app, ["generate", str(root), "-w", "0.5,0.5", "--prompt", "Hi"]), message)
    assert tree(root) == before


# Locks -------------------------------------------------------------------------------------------


def test_a_reader_is_refused_while_a_writer_holds_the_run(run, tmp_path):
    root = _copy(run, tmp_path)
    proc = _holder(root, "write")
    try:
        with pytest.raises(BusyError, match=rf"{root} is being written by pid {proc.pid}, running since .*; wait "
                                            r"for it to finish \(or stop it: .*\), then read it"):
            paretohqd.load(root, [0.5, 0.5])
        _one_line_error(CliRunner().invoke(app, ["export", str(root), "--out", str(tmp_path / "out")]),
                        f"is being written by pid {proc.pid}")
        assert not (tmp_path / "out").exists()
    finally:
        proc.kill()
        proc.wait()


def test_readers_share_the_lock_and_a_writer_is_told_who_reads(tmp_path):
    folder = tmp_path / "runs" / "demo"
    folder.mkdir(parents=True)
    proc = _holder(folder, "read")
    try:
        signed = lock_file(folder).read_text()
        with hold(folder, shared=True):  # a second reader
            pass
        with pytest.raises(BusyError, match=rf"{folder} is being read by pid {proc.pid}, running since .*\(-c "
                                            rf"{folder} read\); a run folder is not written while it is read"):
            with hold(folder):
                pass
        assert lock_file(folder).read_text() == signed  # the refused writer wrote nothing over its name
    finally:
        proc.kill()
        proc.wait()
    with hold(folder):  # the reader's lock went with it
        assert json.loads(lock_file(folder).read_text())["mode"] == "write"


@pytest.mark.parametrize("shared", [False, True])
def test_a_link_where_the_lock_file_belongs_is_refused(tmp_path, shared):
    folder = tmp_path / "demo"
    folder.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    lock_file(folder).symlink_to(target)
    with pytest.raises(InputError, match=rf"{lock_file(folder)}: a symbolic link where the lock file of {folder} "
                                         r"belongs; delete it"):
        with hold(folder, shared=shared):
            pass
    assert target.read_text() == "keep me\n"


# Trust -------------------------------------------------------------------------------------------


def test_a_runs_trust_remote_code_is_asked_for(run, tmp_path):
    root = _copy(run, tmp_path)
    cfg = yaml.safe_load((root / "config.yaml").read_text())
    cfg["policy"]["trust_remote_code"] = True
    (root / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    message = (f"{root / 'config.yaml'} sets policy.trust_remote_code: true, which runs the Python code that comes "
               f"with {cfg['policy']['model']}; if you trust it, pass --trust-remote-code")
    with pytest.raises(InputError, match="pass --trust-remote-code"):
        paretohqd.load(root, [0.5, 0.5])
    runner = CliRunner()
    for args in (["generate", str(root), "-w", "0.5,0.5", "--prompt", "Hi"],
                 ["export", str(root), "--out", str(tmp_path / "out")], ["serve", str(root)]):
        _one_line_error(runner.invoke(app, args), message)
    assert not (tmp_path / "out").exists()
    res = runner.invoke(app, ["generate", str(root), "-w", "0.5,0.5", "--prompt", "Hi", "--trust-remote-code", *GREEDY])
    assert res.exit_code == 0, res.output


# export --out ------------------------------------------------------------------------------------


def test_export_replaces_only_an_earlier_export(run, tmp_path):
    runner = CliRunner()
    notes = tmp_path / "mine"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine\n")
    _one_line_error(runner.invoke(app, ["export", str(run), "--out", str(notes)]),
                    f"--out {notes}: holds 'notes.txt' and is no earlier export (no {EXPORT_MARKER}); ",
                    "give a new or empty folder")
    assert [p.name for p in notes.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    _one_line_error(runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "file")]), "not a folder")
    _one_line_error(runner.invoke(app, ["export", str(run), "--out", str(run / "exports")]),
                    f"inside the run folder {run}")
    assert not (run / "exports").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert runner.invoke(app, ["export", str(run), "--out", str(empty)]).exit_code == 0
    assert json.loads((empty / EXPORT_MARKER).read_text())["run"] == str(run)
    (empty / "stale.txt").write_text("left by hand in an export")
    res = runner.invoke(app, ["export", str(run), "--out", str(empty)])  # an earlier export: replaced whole
    assert res.exit_code == 0, res.output
    assert not (empty / "stale.txt").exists() and (empty / "pref-01" / "adapter_model.safetensors").exists()


def test_export_copies_no_links_target(run, tmp_path):
    root = _copy(run, tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("not the run's\n")
    (root / "stage1" / "pref-01" / "notes.txt").symlink_to(secret)
    out = tmp_path / "out"
    _one_line_error(CliRunner().invoke(app, ["export", str(root), "--out", str(out)]),
                    f"{root / 'stage1' / 'pref-01' / 'notes.txt'}: a symbolic link in the run")
    assert not out.exists() and not (tmp_path / ".out.tmp").exists()


@pytest.mark.parametrize("lora", [True, False])
def test_vllm_script_quotes_every_path(tmp_path, lora):
    """The script, run from a folder whose path holds a space and a `$`, hands vLLM the exact paths."""
    from paretohqd.config import Config

    out = tmp_path / "my $HOME exports"
    names = ["pref-00", "w-0.25-0.75"]
    for n in names:
        (out / n).mkdir(parents=True)
        (out / n / "adapter_config.json").write_text('{"r": 2}')
    base = str(tmp_path / "base model $(touch pwned)")
    _write_serving(Config(train={"lora": lora}), base, names, out)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "vllm").write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" >> "$ARGS_LOG"\n')
    (bin_ / "vllm").chmod(0o755)
    log = tmp_path / "args.txt"
    subprocess.run(["bash", str(out / "vllm-serve.sh"), "--x"], check=True, cwd=tmp_path,
                   env={**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "ARGS_LOG": str(log)})
    args = log.read_text().splitlines()
    if lora:
        assert args == ["serve", base, "--enable-lora", "--max-lora-rank", "8", "--lora-modules",
                        *[f"{n}={out / n}" for n in names], "--x"]
    else:
        assert sorted(args) == sorted(
            [x for i, n in enumerate(names) for x in ("serve", str(out / n), "--served-model-name", n,
                                                       "--port", str(8000 + i), "--x")])
    assert not (tmp_path / "pwned").exists()
