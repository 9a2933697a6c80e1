"""The kill -9 campaign (issue 16): a tiny real `paretohqd run` (a random 2-layer Llama with the
SmolLM2 tokenizer, two random 1-layer BERT reward models, 3 preferences, both stages, evaluation,
the report) in a subprocess, SIGKILLed at seeded random moments spread over every step, resumed
after each kill; the finished run must equal an uninterrupted one: the same selections, stage-2
pools, evaluation answers and report numbers, and adapters equal within float noise (allclose).

    python -m benchmarks.chaos [--kills 24] [--seed 0] [--work DIR]   # from the repository root: its paretohqd

Each kill picks a step (the moment before the first step, every step, and the report after the
last) and a point inside it: a uniform fraction of that step's time in the uninterrupted run. The
kills are cut into sequences, each in pipeline order on a fresh run folder (and a fresh score
cache), so that a sequence resumes step after step as a user would; the first kills cover every
target once, and a step passed before its planned moment (it ran faster than in the uninterrupted
run) gets a last sequence that kills each such step at its start. Printed: kills, the steps they
landed in (the step running at the kill), resumes, what the resumed runs reused (training
checkpoints, saved generation batches, steps finished but not yet recorded), steps redone (with
why), mismatches (must be 0). Offline, CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from paretohqd.testing import tiny_assets, tiny_run_overrides

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# a step's name as the run prints it when the step starts (`RunFolder.step`)
# (and `report`, printed after the last step while the report is written)
STEP = re.compile(r"^(prepare|score|select|stage[12]/pref-\d\d|stage2/generate pref-\d\d|stage2/score|stage2/select|"
                  r"evaluate|report)\b")
START = "(start)"
"""The kill target before the first step: imports, the checks, the steps skipped as done."""


def overrides(a: dict[str, str], runs: Path, rewards: Path, name: str) -> list[str]:
    """The run: `testing.tiny_run_overrides`, larger: 3 preferences, 6 stage-1 steps with a checkpoint
    every 2, 8 stage-2 prompts per representative answered 2 at a time (4 saved batches per pool),
    4 evaluation prompts (a later --set of a key wins)."""
    return tiny_run_overrides(a, runs, rewards, name) + [
        "select.preferences=3", "train.steps=6", "stage2.prompts=8", "stage2.steps=4", "generate.max_new_tokens=8",
        "evaluate.prompts=4", "evaluate.bootstrap=50"]


def command(sets: list[str], config: Path) -> list[str]:
    """`paretohqd run CONFIG --set ...`; CONFIG is a copy of configs/demo.yaml under another name, so
    that these processes are not taken for a timed demo run (a process list search for
    configs/demo.yaml finds them not)."""
    if not config.exists():
        config.write_text((REPO / "configs" / "demo.yaml").read_text())
    return [sys.executable, "-m", "paretohqd", "run", str(config), *[x for s in sets for x in ("--set", s)]]


# `paretohqd` that freezes itself (SIGSTOP) right after it writes its first stage-1 checkpoint
# ("checkpoint") or saved generation batch ("batch"), for a test to SIGKILL it there: a kill at
# that moment, not a race between a poll of the disk and two tiny training steps
PAUSE_PROGRAM = """
import os, signal, sys
import paretohqd.policy.generate as generate, paretohqd.policy.sft as sft
module, name = {"checkpoint": (sft, "save_checkpoint"), "batch": (generate, "write_parquet")}[sys.argv.pop(1)]
saved = getattr(module, name)
def then_stop(*args, **kwargs):
    saved(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGSTOP)
setattr(module, name, then_stop)
from paretohqd.cli import app
app(prog_name="paretohqd")
"""


def pausing(cmd: list[str], after: str) -> list[str]:
    """`cmd` (a `python -m paretohqd ...` command) as a process that stops itself after its first
    write of `after`: "checkpoint" (a stage-1 checkpoint) or "batch" (a saved generation batch)."""
    assert cmd[1:3] == ["-m", "paretohqd"] and after in ("checkpoint", "batch"), (cmd[:3], after)
    return [cmd[0], "-c", PAUSE_PROGRAM, after, *cmd[3:]]


def environment() -> dict[str, str]:
    # this checkout's paretohqd; wide lines (rich wraps at 80 in a pipe); output as it is printed
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "COLUMNS": "200", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class Attempt:
    """One `paretohqd run` process, its output read line by line as it comes: the step running now
    and when it began."""

    def __init__(self, cmd: list[str], order: dict[str, int] | None = None):
        self.order = order or {}
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        self.lines: list[str] = []
        self.step, self.step_t0 = START, self.t0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = STEP.match(line)
            if m:
                self.step, self.step_t0 = m.group(0), time.monotonic()

    def kill_in(self, target: str, after: float, timeout: float = 600) -> str | None:
        """SIGKILL once `target` has run for `after` seconds, or at once if the run is already past
        it (an earlier kill landed after the target's record was written, so it is skipped now);
        returns the step running at the kill, or None if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.reader.join()
                return None
            past = self.order.get(self.step, -1) > self.order.get(target, -1)
            if past or (self.step == target and time.monotonic() - self.step_t0 >= after):
                landed, self.killed_after = self.step, time.monotonic() - self.step_t0
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                self.reader.join()
                return landed
            time.sleep(0.005)
        raise TimeoutError(f"no {target} within {timeout} s")

    def kill_when(self, ready: Callable[[], bool], timeout: float = 600) -> str | None:
        """SIGKILL as soon as `ready()` (polled every 5 ms); returns the step running at the kill, or
        None if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.reader.join()
                return None
            if ready():
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                self.reader.join()
                return self.step
            time.sleep(0.005)
        raise TimeoutError(f"not ready within {timeout} s")

    def finish(self, timeout: float = 900) -> int:
        rc = self.proc.wait(timeout=timeout)
        self.reader.join()
        return rc


def reference(a: dict[str, str], work: Path) -> tuple[Path, dict[str, float]]:
    """The uninterrupted run, and how long each kill target took in it (seconds)."""
    attempt = Attempt(command(overrides(a, work / "runs", work / "rewards-ref", "ref"), work / "chaos.yaml"))
    times: dict[str, float] = {}
    last, t_last = START, attempt.t0
    while attempt.proc.poll() is None or attempt.reader.is_alive():
        if attempt.step != last:
            times[last] = attempt.step_t0 - t_last
            last, t_last = attempt.step, attempt.step_t0
        time.sleep(0.005)
    if attempt.proc.wait() != 0:
        raise RuntimeError("the uninterrupted run failed:\n" + "\n".join(attempt.lines[-40:]))
    times[last] = time.monotonic() - t_last
    return work / "runs" / "ref", times


def plan(times: dict[str, float], kills: int, seed: int, per_sequence: int) -> list[list[tuple[str, float]]]:
    """Kill moments (target, seconds into it), cut into sequences in pipeline order. The first
    len(times) kills cover every target once; the rest are drawn uniformly from the targets."""
    rng = random.Random(seed)
    targets = list(times)
    picks = rng.sample(targets, len(targets))[:kills] + [rng.choice(targets) for _ in range(kills - len(targets))]
    moments = [(t, rng.random() * times[t]) for t in picks]
    sequences = [moments[i:i + per_sequence] for i in range(0, len(moments), per_sequence)]
    return [sorted(s, key=lambda m: (targets.index(m[0]), m[1])) for s in sequences]


TABLES = ("stage1/selection.parquet", "stage2/selection.parquet", "stage2/scores.parquet", "data/scores.parquet",
          "evaluate/responses.parquet")
"""The tables two runs of one config share exactly (a run without stage 2 has none of stage2/)."""


def differences(ref: Path, run: Path, *, atol: float = 1e-7) -> list[str]:
    """Where a finished run differs from the uninterrupted one (empty: none): its tables, its
    models' weights (`model_differences`) and its report's figures, method by method and model by
    model. Whatever one side has and the other lacks is a difference."""
    import pandas as pd

    out = []
    generated = {str(p.relative_to(r)) for r in (ref, run) for p in r.glob("stage2/generated-*")}
    for rel in [*TABLES, *sorted(generated)]:
        there = [(r / rel).exists() for r in (ref, run)]
        if not any(there):
            continue
        if not all(there):
            out.append(f"{rel} only in {ref if there[0] else run}")
            continue
        # a stage-2 table's `model` column names the adapter by its path, which names the run folder
        a, b = (pd.read_parquet(r / rel).drop(columns="model", errors="ignore") for r in (ref, run))
        if not a.equals(b):
            out.append(rel)
    out += model_differences(ref, run, atol=atol)
    ra, rb = ({m.get("method"): m for m in json.loads((r / "report.json").read_text())["methods"]} for r in (ref, run))
    if not ra and not rb:
        out.append("report.json: no method in either report")
    for name in sorted(set(ra) | set(rb), key=str):
        if name not in ra or name not in rb:
            out.append(f"report.json method {name} only in {ref if name in ra else run}")
            continue
        ma, mb = ra[name], rb[name]
        for key in ("hypervolume", "hypervolume_ci95", "collapse_rate", "hypervolumes"):
            if ma.get(key) != mb.get(key):
                out.append(f"report.json {name} {key}")
        if {m.get("model"): m.get("mean") for m in ma["models"]} != {m.get("model"): m.get("mean") for m in mb["models"]}:
            out.append(f"report.json {name} per-model means (or models)")
    return out


def _weight_files(root: Path) -> set[str]:
    """The models' weights in a run folder (LoRA adapters, or whole models), relative paths; not a
    checkpoint's or a hidden temp folder's."""
    rels = (p.relative_to(root) for p in root.rglob("*.safetensors"))
    return {str(rel) for rel in rels if not any(part.startswith(".") or part.endswith(".ckpt") for part in rel.parts)}


def model_differences(ref: Path, run: Path, *, atol: float = 1e-7) -> list[str]:
    """The models' weights that differ (allclose, rtol 1e-5 and `atol`; the same tensors by name),
    that one side lacks, or that neither has (a finished run has models: finding none is a failure
    to look, not a match)."""
    import torch
    from safetensors.torch import load_file

    a, b = _weight_files(ref), _weight_files(run)
    if not a and not b:
        return [f"no model weights (*.safetensors) in {ref} or {run}"]
    out = [f"{rel} only in {ref if rel in a else run}" for rel in sorted(a ^ b)]
    for rel in sorted(a & b):
        wa, wb = load_file(ref / rel), load_file(run / rel)
        if wa.keys() != wb.keys() or not all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=atol) for k in wa):
            out.append(rel)
    return out


def campaign(work: Path, *, kills: int, seed: int, per_sequence: int = 8, say=print) -> dict:
    """Run the campaign in `work`; returns its figures (`mismatches` must be 0)."""
    t0 = time.monotonic()
    a = tiny_assets(work / "assets")
    ref, times = reference(a, work)
    say(f"uninterrupted run: {sum(times.values()):.0f} s; targets: " + ", ".join(f"{t} {s:.1f} s" for t, s in times.items()))
    landed, resumes, reused, redone, mismatched, finished = Counter(), 0, Counter(), [], [], 0
    order = {t: i for i, t in enumerate(times)}
    sequences = plan(times, kills, seed, per_sequence)
    n = 0
    while n < len(sequences):
        sets = overrides(a, work / "runs", work / f"rewards-{n}", f"seq{n}")
        for target, after in sequences[n]:
            attempt = Attempt(command(sets, work / "chaos.yaml"), order=order)
            step = attempt.kill_in(target, after)
            if step is None:  # the run finished before the target came round: no later kill can land
                if attempt.proc.returncode != 0:
                    raise RuntimeError("\n".join(attempt.lines[-40:]))
                finished += 1
                say(f"  seq {n}: the run finished before {target}")
                break
            landed[step] += 1
            resumes += 1
            say(f"  seq {n}: killed {attempt.killed_after:5.2f} s into {step} (planned: {after:.2f} s into {target})")
            _count_reuse(attempt.lines, reused, redone)
        final = Attempt(command(sets, work / "chaos.yaml"))
        if final.finish() != 0:
            raise RuntimeError("a resumed run failed:\n" + "\n".join(final.lines[-60:]))
        _count_reuse(final.lines, reused, redone)
        diff = differences(ref, work / "runs" / f"seq{n}")
        mismatched += [f"seq{n}: {d}" for d in diff]
        say(f"  seq {n}: finished; {'equal to the uninterrupted run' if not diff else 'DIFFERS: ' + ', '.join(diff)}")
        missing = [t for t in times if not landed[t]]
        if n == len(sequences) - 1 and missing:
            # a step that ran faster than in the uninterrupted run was passed before its planned moment
            # (that kill landed in the next step): a last sequence kills each missed one at its start
            sequences.append([(t, 0.0) for t in missing])
            say(f"  targets missed so far: {', '.join(missing)}; one more sequence kills each at its start")
        n += 1
    return {"kills": sum(landed.values()), "steps_hit": {t: landed[t] for t in times}, "targets": len(times),
            "targets_hit": sum(1 for t in times if landed[t]), "resumes": resumes, "sequences": len(sequences),
            "runs_finished_before_a_kill": finished, "reused": dict(reused), "redone": redone,
            "mismatches": len(mismatched), "mismatched": mismatched, "seconds": round(time.monotonic() - t0, 1)}


def _count_reuse(lines: list[str], reused: Counter, redone: list[str]) -> None:
    for line in lines:
        if "saved before a stop reused" in line:
            reused["generation batches"] += int(re.search(r"(\d+) batch", line).group(1))
        elif line.startswith("  resumed from the checkpoint"):
            reused["training checkpoints"] += 1
        elif line.startswith("redo "):
            redone.append(line)
        elif line.startswith("skip ") and "recorded now" in line:
            reused["steps recorded after a stop"] += 1
        elif line.startswith("recovered "):
            reused["folder swaps recovered"] += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-sequence", type=int, default=8, help="kills per run folder before it finishes")
    ap.add_argument("--work", type=Path, help="working folder (default: a temp folder)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="paretohqd-chaos-"))
    res = campaign(work, kills=args.kills, seed=args.seed, per_sequence=args.per_sequence)
    print(json.dumps(res, indent=2))
    print(f"kills: {res['kills']} in {res['targets_hit']} of {res['targets']} targets; resumes: {res['resumes']}; "
          f"mismatches: {res['mismatches']}; {res['seconds']:.0f} s")
    sys.exit(1 if res["mismatches"] else 0)


if __name__ == "__main__":
    main()
