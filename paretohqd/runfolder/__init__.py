"""A run folder (`runs_dir/NAME/`): its named paths, its one config, and `manifest.json`, the record
of which steps finished and what each cost. This package is the only writer of the manifest.

Every step writes its outputs atomically and is recorded with its wall and device time and the
size and checksum of every file it wrote. A rerun skips finished steps whose files still match
their record, and redoes (saying why) one whose files are missing or changed; a killed run resumes
from the last finished step, and inside a step from its last checkpoint (training) or chunk
(generation). Independent steps (`fan_out`) may run together elsewhere (`paretohqd.executor`):
this process records them all the same. A step may also run alone, as a unit (`Only`, `paretohqd
run CONFIG --unit ID`): several units of one run at once, each in its own process, each recording
itself in a file of its own.

The parts: `layout` (the preference models' names, `FinalModel`, and the config the folder is bound
to), `manifest` (the records, the files' digests, what a step wrote) and `memo` (whether a step is
finished or must be redone); `RunFolder` here puts them together.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from accelerate import PartialState
from accelerate.utils.memory import clear_device_cache

from paretohqd.config import Config, ConfigError
from paretohqd.devices import Ranks
from paretohqd.io import InputError, interrupted_dirs, recover_dirs, write_json
from paretohqd.pareto.preferences import preferences_from_config
from paretohqd.progress import console
from paretohqd.runfolder.layout import FinalModel, Unit, bind_config, config_differences, pref_name
from paretohqd.runfolder.manifest import (fanned_outputs, manifest_entry, output_files, read_manifest, step_outputs,
                                          times_table, unit_outputs, unit_record)
from paretohqd.runfolder.memo import FINISHED, UNRECORDED, finished, verdict

__all__ = ["FinalModel", "Only", "RunFolder", "Runner", "Unit", "UnitDone", "config_differences", "finished",
           "manifest_entry", "pref_name", "read_manifest"]


@dataclass(frozen=True)
class Only:
    """The one step a process runs (a unit of `paretohqd plan`); the run's other steps are passed over."""

    step: str
    """The step's name in the manifest."""
    others: tuple[Path, ...] = ()
    """Other units' done-markers and model folders: never this step's outputs, even where they
    share its folder and changed while it ran (they run at the same time)."""


class UnitDone(Exception):
    """Raised by `RunFolder.step` once the `Only` step is done: the steps after it (which read its
    outputs and those of steps this process passed over) are not this process's to run."""


Runner = Callable[[str, list[Callable[[], object]]], list]
"""Runs jobs of a kind (`train`, `generate`) together, elsewhere (`executor.attach`): for each job, in
order, its task record (wall_s, device, n_devices, node, host, pid) or the exception it raised."""


class RunFolder:
    """The run's folder, config, objectives, preferences and manifest.

    Args:
        cfg: the run's config; `cfg.runs_dir / cfg.name` is the folder unless `root` is given.
        root: an existing run folder (`paretohqd evaluate RUN`).
        read_only: a reader's view of a finished run (`serve`, `generate`, `export`, `paretohqd.load`,
            `evaluate --prompts`): nothing in the folder is written, moved or deleted; its steps
            cannot run (`step`, `record`).
        only: run this step alone (a unit); it records itself in `manifest.d/`, and only the
            folder's config is written besides its outputs (when the folder has none yet).

    Raises:
        ConfigError: the folder was made with another config (the keys that differ are named).
        InputError: (read_only) a folder replacement in it is unfinished: a writer is at it, or was stopped.
    """

    def __init__(self, cfg: Config, root: str | Path | None = None, *, free: tuple[str, ...] = (),
                 read_only: bool = False, only: Only | None = None):
        self.cfg = cfg
        self.free = free  # config sections that do not bind this folder (`config_differences`)
        self.root = Path(root) if root is not None else Path(cfg.runs_dir) / cfg.name
        self.read_only = read_only
        self.only = only
        self.objectives: list[str] = list(cfg.rewards.models)
        try:
            self.preferences: np.ndarray = preferences_from_config(cfg.select.preferences, len(self.objectives))  # (P, M)
        except ValueError as e:
            raise ConfigError(f"select.preferences: {e}") from None
        if read_only:  # finishing a swap is the writer's job: a reader would race it
            swapped = interrupted_dirs(self.root)
            if swapped:
                raise InputError(f"run {self.root} is being written (or was interrupted; {swapped[0]} is half "
                                 f"replaced): run `paretohqd run {self.root / 'config.yaml'}` to finish it")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            # a unit leaves the others' folders alone: one may be replacing its own right now
            if self.state.is_main_process and only is None:
                for folder in recover_dirs(self.root):  # a folder swap a kill cut short (`io.atomic_dir`)
                    console.print(f"[yellow]recovered {folder} (a replacement of it was interrupted)[/]")
        bind_config(cfg, self.root, self.state, free=free,
                    read_only=read_only or (only is not None and (self.root / "config.yaml").exists()))
        self.manifest = read_manifest(self.root)
        self.n_devices = self.state.num_processes
        self.ranks = Ranks.of(self.state)
        """This process among the launched ones: a `spread` step splits its work over them."""
        self.runner: Runner | None = None
        """Where `fan_out` blocks and `run_all` jobs run: None = here, inline (`executor.attach` sets it)."""
        self._queued: list | None = None  # inside `fan_out` with a runner: the steps to start at its end
        self._tasks: list[dict] = []  # task records of the running step's `run_all` jobs
        self._in_task = False

    def __getstate__(self) -> dict:
        # a step's function goes to a task with its closure, this object included: there it runs
        # inline, and may never write the manifest (its driver does, from what the task returns)
        return {**self.__dict__, "runner": None, "_queued": None, "_tasks": [], "_in_task": True, "ranks": Ranks()}

    # named paths shared by every method
    @property
    def train_data(self) -> Path:
        return self.path("data", "train.parquet")

    @property
    def heldout(self) -> Path:
        return self.path("data", "heldout.parquet")

    @property
    def scores(self) -> Path:
        return self.path("data", "scores.parquet")

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def log_to(self, tag: str) -> dict:
        """Where a model's training reports (`train.report_to`): RUN/logs/, one tracker run named
        after the run folder, the model's scalars under `tag` (e.g. `stage1/pref-00/loss`)."""
        return {"log_dir": self.path("logs"), "log_run": self.root.name, "log_tag": tag}

    @property
    def state(self) -> PartialState:
        # one process, or one per device under a launcher (`devices.init_processes`); asked afresh
        # each time because a single-process trainer may reset accelerate's shared state
        return PartialState()

    def step(self, name: str, done: Path, fn: Callable[[], object], *, every_process: bool = False,
             spread: bool = False) -> None:
        """Run `fn` unless the step finished before; record wall time, device time and the size and
        checksum of every file it wrote (`outputs`) in the manifest.

        A step counts as finished when `done` exists and every file recorded for it still matches
        its record. Otherwise it is redone, with one line saying why; the files that no longer
        match (and `done`) are deleted first, so that `fn` cannot reuse them.

        Under a launcher, training runs on every process (`every_process`), and so do generation
        and scoring (`spread`), each process taking its share of the step's jobs (`self.ranks`);
        the main process alone runs the other steps while the rest wait. Only the main process
        writes, so no file is written twice. The manifest charges every held device either way,
        and records how many worked (`manifest_entry`): all while training, those that had a
        share of a `spread` step's jobs, else one.
        """
        if self.only is not None and name != self.only.step:
            return  # another unit's: its own process runs it (`Only`)
        self._writable(name)
        # the main process decides and the others follow: all take the same branch, or their
        # barriers and collectives would pair up wrongly (and none may look after `done` is written)
        found = [verdict(self.root, self.manifest, name, done, self._forget) if self.state.is_main_process else None]
        if self.n_devices > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(found, from_process=0)
        self.state.wait_for_everyone()
        if found[0] == FINISHED:
            console.print(f"[dim]skip {name} (done)[/]")
            self._unit_done()
            return
        if found[0] == UNRECORDED:  # finished, but stopped before its record: recorded now, not redone
            console.print(f"[dim]skip {name} (done; recorded now, the run stopped before recording it)[/]")
            entry = {**manifest_entry(0.0, self.n_devices, 1), "recorded_late": True}
            if self.state.is_main_process:
                entry["outputs"] = self._outputs(name, output_files(self.root), done)
            self.record(name, entry)
            self._unit_done()
            return
        if found[0] is not None:
            console.print(f"[yellow]redo {name}: {found[0]}[/]")
        console.print(f"[bold]{name}[/]")
        if self._queued is not None:  # started with the block's other steps when it ends (`fan_out`)
            self._queued.append((name, done, fn))
            return
        before = output_files(self.root) if self.state.is_main_process else {}
        self._tasks = []
        t0, shares = time.perf_counter(), self.ranks.shares
        if every_process or spread or self.state.is_main_process:
            fn()
            # models a step loaded sit in reference cycles (trainers, hooks) until the collector runs:
            # free them now, so the next step (or the next method of `compare`) starts with the memory
            clear_device_cache(garbage_collection=True)
        self.state.wait_for_everyone()
        busy = self.n_devices if every_process else 1
        if spread and self.n_devices > 1:  # the ranks that had a share (a step of one batch keeps one busy)
            busy = max(1, sum(self.ranks.gather(self.ranks.shares > shares)))
        entry = manifest_entry(time.perf_counter() - t0, self.n_devices, busy)
        if self._tasks:  # the jobs this step ran elsewhere (`run_all`): where, for how long, on what
            entry["tasks"] = self._tasks
            for key in ("device_s", "busy_device_s"):
                entry[key] = round(entry[key] + sum(t["wall_s"] * t["n_devices"] for t in self._tasks), 3)
        if self.state.is_main_process:
            entry["outputs"] = self._outputs(name, before, done)
        self.record(name, entry)
        self._unit_done()

    def _outputs(self, name: str, before: dict, done: Path) -> dict[str, dict]:
        if self.only is None:
            return step_outputs(self.root, self.manifest, name, before, done)
        return unit_outputs(self.root, before, done, self.only.others)

    def _unit_done(self) -> None:
        if self.only is not None:
            raise UnitDone(self.only.step)

    # Independent units, run together by a runner (`executor.kind: ray`) -------------------------------

    @contextmanager
    def fan_out(self, kind: str) -> Iterator[None]:
        """Mark the block's steps as independent of each other (one per preference or model).

        Without a runner this changes nothing: each step runs when `step` is called. With one, the
        steps not done yet are started together as tasks of `kind` (`train` or `generate`, whose
        resources `executor.KIND` sets) when the block ends, and the block waits for all of them.
        Each finished one is recorded here, from what its task returns (this process alone writes
        the manifest). A failed task's error is raised once the others are recorded: a rerun redoes
        only the failed ones.
        """
        if self.runner is None or self._queued is not None:  # (nested: the outer block starts them)
            yield
            return
        self._queued = []
        try:
            yield
            queued = self._queued
        finally:
            self._queued = None
        if not queued:
            return
        before = output_files(self.root)
        results = self.runner(kind, [fn for _, _, fn in queued])
        outputs = fanned_outputs(self.root, self.manifest, before, [done for _, done, _ in queued])
        for (name, _, _), result, mine in zip(queued, results, outputs):
            if not isinstance(result, BaseException):
                n = result.pop("n_devices")
                self.record(name, {**manifest_entry(result.pop("wall_s"), n, n), **result, "outputs": mine})
        _raise_first(results)

    def run_all(self, kind: str, jobs: list[Callable[[], object]]) -> None:
        """Run independent jobs that are parts of one step (evaluation's models): one after another
        here, or with a runner together as tasks of `kind`, their records going into the step's
        manifest entry (`tasks`)."""
        if self.runner is None:
            for job in jobs:
                job()
            return
        results = self.runner(kind, jobs)
        self._tasks += [r for r in results if not isinstance(r, BaseException)]
        _raise_first(results)

    def record(self, name: str, entry: dict) -> None:
        """Add (or replace) one step's record in `manifest.json` (main process only); a unit's in its
        own file (`manifest.d/`), the whole run's replacing it."""
        self._writable(name)
        if self._in_task:
            raise RuntimeError(f"step {name!r} would be recorded inside a task; its driver records it")
        if not self.state.is_main_process:
            return
        self.manifest["steps"][name] = entry
        if self.only is not None:
            write_json({"steps": {name: entry}}, unit_record(self.root, name))
            return
        write_json(self.manifest, self.path("manifest.json"))
        unit_record(self.root, name).unlink(missing_ok=True)

    def _forget(self, name: str) -> None:
        """Drop step `name`'s record (it is redone): from its unit's file, and from `manifest.json`
        unless this process is a unit (which writes only its own file)."""
        del self.manifest["steps"][name]
        unit_record(self.root, name).unlink(missing_ok=True)
        if self.only is None:
            write_json(self.manifest, self.path("manifest.json"))

    def _writable(self, name: str) -> None:
        if self.read_only:
            raise RuntimeError(f"step {name!r} would write {self.root}, opened read-only (a reader of the run)")

    def print_times(self) -> None:
        console.print(times_table(self.root, self.manifest))


def _raise_first(results: list) -> None:
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
