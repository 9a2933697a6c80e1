"""Stage 1 one model after another (`executor.kind: local`) against together as Ray tasks (`ray`)
and as scheduler units (`paretohqd run --wave stage1 --unit-index I`, two processes at once, as two
array tasks on shared storage), on this CPU, and what that means for 11 preferences on 8 GPUs.

    python -m benchmarks.bench_fanout                  # SmolLM2-135M, 4 preferences x 4 steps: a few minutes on 2 cores
    python -m benchmarks.bench_fanout --model tiny     # a random 2-layer Llama: checks that it runs (seconds)

(from the repository root: its paretohqd). A tiny real run (`testing.tiny_assets`: 40 HH rows per subset, two random 1-layer BERT reward models) is
prepared, scored and selected once, then trains stage 1 for 4 preferences in this process, torch on
all cores (`local`). Its folder is copied with the stage-1 models removed, and the same stage 1
runs as Ray tasks on a local Ray of `--workers` CPUs, 1 CPU (1 torch thread) per task (`ray`);
Ray's start is timed apart. Printed: machine, commit, date; each job's wall time both ways (from
the manifests); the stage's wall time both ways; last the ratio and the projection: with one
device per job, a stage of P jobs on G devices takes ceil(P / G) waves of its slowest job instead
of the sum of all jobs, plus the scheduling overhead measured here (the ray stage's wall time
minus its slowest job). The unit path copies the folder the same way and starts the wave's units
as their own `paretohqd run` processes, `--workers` at a time, 1 torch thread each; its jobs'
times come from their own records (`manifest.d/`), its wave's wall time includes each process's
start (imports, loading the model), which a scheduler's array task pays too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from paretohqd import executor, pipeline  # noqa: E402
from paretohqd.config import load_config  # noqa: E402
from paretohqd.lock import hold  # noqa: E402
from paretohqd.methods.paretohqd import _train_stage  # noqa: E402
from paretohqd.policy.load import load_tokenizer  # noqa: E402
from paretohqd.progress import console  # noqa: E402
from paretohqd.testing import tiny_assets, tiny_run_overrides  # noqa: E402
from paretohqd.runfolder import RunFolder, read_manifest  # noqa: E402

PROJECT_PREFS, PROJECT_DEVICES = 11, 8


def _stage1_times(root: Path) -> dict[str, float]:
    steps = read_manifest(root)["steps"]
    return {name.split()[0]: e["wall_s"] for name, e in steps.items() if name.startswith("stage1/pref-")}


def _copy_without_stage1(local: Path, root: Path) -> None:
    """The finished local run's folder, less its stage-1 models, for the same stage 1 again."""
    shutil.copytree(local, root)
    for folder in root.glob("stage1/pref-*"):
        shutil.rmtree(folder)
    (root / "config.yaml").unlink()  # written afresh: it names the folder


def _units(sets: list[str], workers: int, n: int) -> float:
    """The stage-1 wave as `paretohqd run --wave stage1 --unit-index I` processes, `workers` at a
    time, 1 torch thread each; returns the wave's wall time (s)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "paretohqd", "run", "configs/demo.yaml", *(x for s in sets for x in ("--set", s))]
    t0 = time.perf_counter()
    for first in range(0, n, workers):
        procs = [subprocess.Popen([*args, "--wave", "stage1", "--unit-index", str(i)], cwd=REPO, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for i in range(first, min(first + workers, n))]
        for p in procs:
            if p.wait() != 0:
                raise SystemExit(f"unit failed: {p.args}\n{p.stderr.read()}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per preference")
    ap.add_argument("--workers", type=int, default=2, help="Ray CPUs: tasks at once, 1 thread each")
    ap.add_argument("--work", type=Path, help="folder for the runs (default a fresh temporary one)")
    args = ap.parse_args()
    import ray
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # (loading bars: only the figures below are printed)

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    print(f"machine: {platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}; commit {commit}; {dt.datetime.now().isoformat(timespec='seconds')}")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    assets = tiny_assets(work / "assets")
    sets = tiny_run_overrides(assets, work / "runs", work / "rewards", "local")
    sets += ["method=stage1-only", "select.preferences=4", f"train.steps={args.steps}", "train.batch_size=4",
             f"train.save_every={args.steps}", "select.k=8", "evaluate.prompts=1"]
    if args.model == "smollm2":
        sets.append("policy.model=smollm2-135m-instruct")
    print(f"stage 1: 4 preferences x {args.steps} steps x batch 4, policy {args.model}")
    console.file = open(os.devnull, "w")  # the runs' own progress lines: only the figures below are printed

    # local: the whole run (prepare, score, select, stage 1, evaluate), stage 1 timed by its manifest
    local = pipeline.run(load_config("configs/demo.yaml", sets))
    local_jobs = _stage1_times(local)

    # ray: the same stage 1 on a copy of that folder without its stage-1 models
    root = work / "runs" / "ray"
    _copy_without_stage1(local, root)
    cfg = load_config("configs/demo.yaml", [*sets, "name=ray", "executor.kind=ray"])
    tokenizer = load_tokenizer(cfg.policy.model)
    t0 = time.perf_counter()
    ray.init(num_cpus=args.workers, runtime_env=executor.runtime_env(), include_dashboard=False,
             object_store_memory=100 * 2**20, log_to_driver=False, logging_level="warning")
    try:
        with hold(root):
            r = RunFolder(cfg)
            with executor.attach(r):
                ray_start = time.perf_counter() - t0
                t0 = time.perf_counter()
                _train_stage(r, tokenizer, "stage1", r.scores, cfg.train.steps)
                ray_stage = time.perf_counter() - t0
    finally:
        ray.shutdown()
    ray_jobs = _stage1_times(root)

    # units: the same stage 1 again, each preference its own `paretohqd run --unit` process
    _copy_without_stage1(local, work / "runs" / "units")
    unit_stage = _units([*sets, "name=units"], args.workers, len(local_jobs))
    unit_jobs = _stage1_times(work / "runs" / "units")

    print(f"{'job':<16}{'local s':>10}{'ray s':>10}{'unit s':>10}")
    for name in local_jobs:
        print(f"{name:<16}{local_jobs[name]:>10.1f}{ray_jobs[name]:>10.1f}{unit_jobs[name]:>10.1f}")
    local_stage = sum(local_jobs.values())
    print(f"stage 1 wall: local {local_stage:.1f} s (sum of its jobs); ray {ray_stage:.1f} s with {args.workers} "
          f"workers of 1 thread (Ray's start and the storage probe: {ray_start:.1f} s, apart); units "
          f"{unit_stage:.1f} s, {args.workers} processes of 1 thread at a time (their starts included)")
    job = sum(local_jobs.values()) / len(local_jobs)  # one job with a whole device to itself
    overhead = max(ray_stage - max(ray_jobs.values()) * math.ceil(len(ray_jobs) / args.workers), 0.0)
    waves = math.ceil(PROJECT_PREFS / PROJECT_DEVICES)
    proj_local, proj_ray = PROJECT_PREFS * job, waves * job + overhead
    print(f"ray / local stage-1 speed here: {local_stage / ray_stage:.2f}x; projection for {PROJECT_PREFS} preferences "
          f"on {PROJECT_DEVICES} GPUs (jobs of {job:.1f} s, {waves} waves + {overhead:.1f} s overhead): "
          f"local {proj_local:.0f} s, ray {proj_ray:.0f} s = {proj_local / proj_ray:.1f}x")
    unit_job = sum(unit_jobs.values()) / len(unit_jobs)
    unit_waves = math.ceil(len(unit_jobs) / args.workers)
    jobs = list(unit_jobs.values())
    # what a unit pays beyond its job (a process start: imports, loading the model, reading the folder), a wave
    start = max(unit_stage - sum(max(jobs[i:i + args.workers]) for i in range(0, len(jobs), args.workers)), 0.0) / unit_waves
    print(f"units / local stage-1 speed here: {local_stage / unit_stage:.2f}x; each unit's job {unit_job:.1f} s "
          f"(1 thread), its process start and the rest {start:.1f} s")
    # units: an array of P tasks on G devices, each a job with a device to itself (the local job) plus that start
    proj_units = waves * (job + start)
    print(f"projection for {PROJECT_PREFS} preferences on {PROJECT_DEVICES} GPUs as array tasks ({waves} waves of "
          f"{job:.1f} s jobs + {start:.1f} s starts): local {proj_local:.0f} s, units {proj_units:.0f} s = "
          f"{proj_local / proj_units:.1f}x")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
