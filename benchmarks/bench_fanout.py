"""Stage 1 one model after another (`executor.kind: local`) against together as Ray tasks (`ray`),
on this CPU, and what that means for 11 preferences on 8 GPUs.

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
minus its slowest job).
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
from paretohqd.runfolder import RunFolder  # noqa: E402

PROJECT_PREFS, PROJECT_DEVICES = 11, 8


def _stage1_times(root: Path) -> dict[str, float]:
    steps = json.loads((root / "manifest.json").read_text())["steps"]
    return {name.split()[0]: e["wall_s"] for name, e in steps.items() if name.startswith("stage1/pref-")}


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
    shutil.copytree(local, root)
    for folder in root.glob("stage1/pref-*"):
        shutil.rmtree(folder)
    (root / "config.yaml").unlink()  # written afresh: it names the folder
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

    print(f"{'job':<16}{'local s':>10}{'ray s':>10}")
    for name in local_jobs:
        print(f"{name:<16}{local_jobs[name]:>10.1f}{ray_jobs[name]:>10.1f}")
    local_stage = sum(local_jobs.values())
    print(f"stage 1 wall: local {local_stage:.1f} s (sum of its jobs); ray {ray_stage:.1f} s with {args.workers} "
          f"workers of 1 thread (Ray's start and the storage probe: {ray_start:.1f} s, apart)")
    job = sum(local_jobs.values()) / len(local_jobs)  # one job with a whole device to itself
    overhead = max(ray_stage - max(ray_jobs.values()) * math.ceil(len(ray_jobs) / args.workers), 0.0)
    waves = math.ceil(PROJECT_PREFS / PROJECT_DEVICES)
    proj_local, proj_ray = PROJECT_PREFS * job, waves * job + overhead
    print(f"ray / local stage-1 speed here: {local_stage / ray_stage:.2f}x; projection for {PROJECT_PREFS} preferences "
          f"on {PROJECT_DEVICES} GPUs (jobs of {job:.1f} s, {waves} waves + {overhead:.1f} s overhead): "
          f"local {proj_local:.0f} s, ray {proj_ray:.0f} s = {proj_local / proj_ray:.1f}x")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
