"""The scheduler files `paretohqd plan CONFIG --slurm / --k8s / --skypilot` writes (issue 29), tested
as far as a machine without Slurm, Kubernetes or SkyPilot allows: the Slurm script runs against a
fake `sbatch` that records each submission (array size, dependency, command); the Kubernetes and
SkyPilot files parse as YAML of the expected shape. Every array task's command is run by a shell,
as the scheduler would run it, with a fake `paretohqd` that records its arguments; those
arguments must be a `paretohqd run` the CLI accepts and that runs the wave's unit at that index
(`pipeline.run` mocked; one of them is checked for real with `--check`)."""

import os
import subprocess
from pathlib import Path

import yaml
from typer.testing import CliRunner

from paretohqd.cli import app
from paretohqd.config import load_config
from paretohqd.plan import plan
from paretohqd.testing import tiny_run_overrides

FAKE_PARETOHQD = '#!/bin/sh\nprintf "%s\\0" "$@" > "$ARGS_OUT"\n'
FAKE_SBATCH = """#!/bin/bash
n=$(ls "$SBATCH_LOG" | wc -l)
printf '%s\\0' "$@" > "$SBATCH_LOG/$(printf %02d "$n")"
echo "$((1000 + n));cluster"
"""


def _bin(tmp_path: Path) -> dict:
    """PATH with fake `paretohqd` and `sbatch` first."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, text in (("paretohqd", FAKE_PARETOHQD), ("sbatch", FAKE_SBATCH)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    (tmp_path / "sbatch-log").mkdir()
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "SBATCH_LOG": str(tmp_path / "sbatch-log"),
            "ARGS_OUT": str(tmp_path / "args")}


def _task_args(command: str, env: dict, var: str, index: int, tmp_path: Path) -> list[str]:
    """The arguments `paretohqd` gets when a shell runs `command` as array task `index`."""
    subprocess.run(["sh", "-c", command], env={**env, var: str(index)}, check=True, timeout=60)
    return (tmp_path / "args").read_text().split("\0")[:-1]


def _check(args: list[str], unit: str, monkeypatch) -> None:
    """`args` is a `paretohqd run` the CLI accepts, which runs `unit` (`pipeline.run` mocked)."""
    from paretohqd import pipeline

    ran = []
    monkeypatch.setattr(pipeline, "run", lambda cfg, config_args, unit: ran.append(unit))
    assert args[0] == "run"
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert ran == [unit]


def _tiny(tmp_path, chaos_assets) -> tuple[dict, list[str]]:
    sets = tiny_run_overrides(chaos_assets, tmp_path / "runs", tmp_path / "rewards", "deploy")
    return plan(load_config("configs/demo.yaml", sets)), sets


def _plan_args(sets: list[str]) -> list[str]:
    return ["plan", "configs/demo.yaml", *(x for s in sets for x in ("--set", s))]


def test_the_slurm_script_submits_one_array_per_wave_chained_by_afterok(tmp_path, chaos_assets, monkeypatch):
    p, sets = _tiny(tmp_path, chaos_assets)
    script = tmp_path / "run.sh"
    assert CliRunner().invoke(app, [*_plan_args(sets), "--slurm", str(script)]).exit_code == 0
    env = _bin(tmp_path)
    res = subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    calls = [f.read_text().split("\0")[:-1] for f in sorted((tmp_path / "sbatch-log").iterdir())]
    assert len(calls) == len(p["waves"])
    for n, (call, (wave, ids)) in enumerate(zip(calls, p["waves"].items())):
        opts = dict(a.split("=", 1) for a in call if a.startswith("--") and "=" in a)
        assert opts["--array"] == f"0-{len(ids) - 1}" and opts["--job-name"] == f"deploy-{wave}"
        assert opts.get("--dependency") == (f"afterok:{1000 + n - 1}" if n else None)  # the wave before, all of it
        assert ("--gres=gpu:1" in call) == (wave in ("score", "stage1", "stage2-generate", "stage2-score", "stage2",
                                                     "evaluate"))
        for i, unit in enumerate(ids):
            _check(_task_args(opts["--wrap"], env, "SLURM_ARRAY_TASK_ID", i, tmp_path), unit, monkeypatch)
    assert f"wave report: job {1000 + len(p['waves']) - 1}, 1 task(s)" in res.stdout
    # and the real command, checked without the mock: the config, models and data, and the unit
    monkeypatch.undo()
    res = CliRunner().invoke(app, [*_task_args(calls[3][-1].split("=", 1)[1], env, "SLURM_ARRAY_TASK_ID", 1, tmp_path),
                                   "--check"])
    assert res.exit_code == 0 and "unit stage1/pref-01 of" in res.output, res.output


def test_the_kubernetes_jobs_are_indexed_one_per_wave_applied_in_order(tmp_path, chaos_assets, monkeypatch):
    p, sets = _tiny(tmp_path, chaos_assets)
    out = tmp_path / "k8s"
    assert CliRunner().invoke(app, [*_plan_args(sets), "--k8s", str(out)]).exit_code == 0
    files = sorted(out.glob("*.yaml"))
    assert len(files) == len(p["waves"])
    env = _bin(tmp_path)
    submit = (out / "submit.sh").read_text().splitlines()
    for n, (path, (wave, ids)) in enumerate(zip(files, p["waves"].items())):
        job = yaml.safe_load(path.read_text())
        assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
        assert job["spec"]["completions"] == job["spec"]["parallelism"] == len(ids)
        # applied in order, each waited for before the next
        assert submit[4 + 2 * n] == f"kubectl apply -f {path.name}"
        assert submit[5 + 2 * n].startswith("kubectl wait --for=condition=complete")
        assert submit[5 + 2 * n].endswith(f"job/{job['metadata']['name']}")
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][:2] == ["sh", "-c"]
        for i, unit in enumerate(ids):
            _check(_task_args(container["command"][2], env, "JOB_COMPLETION_INDEX", i, tmp_path), unit, monkeypatch)


def test_the_skypilot_pipeline_has_a_task_per_wave_one_node_per_unit(tmp_path, chaos_assets, monkeypatch):
    p, sets = _tiny(tmp_path, chaos_assets)
    out = tmp_path / "sky.yaml"
    assert CliRunner().invoke(app, [*_plan_args(sets), "--skypilot", str(out)]).exit_code == 0
    head, *tasks = yaml.safe_load_all(out.read_text())
    assert head == {"name": "deploy"} and len(tasks) == len(p["waves"])
    env = _bin(tmp_path)
    for task, (wave, ids) in zip(tasks, p["waves"].items()):
        assert task["num_nodes"] == len(ids) and task["resources"]["use_spot"] is True
        assert list(task["file_mounts"]) == [str(tmp_path / "runs")]  # runs_dir (absolute here), on every node
        for i, unit in enumerate(ids):
            _check(_task_args(task["run"], env, "SKYPILOT_NODE_RANK", i, tmp_path), unit, monkeypatch)
