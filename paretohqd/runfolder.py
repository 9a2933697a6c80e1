"""A run folder (`runs_dir/NAME/`): its named paths, its one config, and `manifest.json`, the record
of which steps finished and what each cost. This module is the only writer of the manifest.

Every step writes its outputs atomically and is recorded with its wall and device time and the
size and checksum of every file it wrote. A rerun skips finished steps whose files still match
their record, and redoes (saying why) one whose files are missing or changed; a killed run resumes
from the last finished step, and inside a step from its last checkpoint (training) or chunk
(generation). Independent steps (`fan_out`) may run together elsewhere (`paretohqd.executor`):
this process records them all the same.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from numpy.typing import ArrayLike
import torch
from accelerate import PartialState
from accelerate.utils.memory import clear_device_cache
from rich.table import Table

from paretohqd.config import Config, ConfigError, dump_config
from paretohqd.devices import device_name
from paretohqd.io import InputError, file_digest, interrupted_dirs, recover_dirs, write_json, write_text
from paretohqd.pareto.preferences import preferences_from_config
from paretohqd.progress import console


def pref_name(i: int) -> str:
    """The name of preference i's model and folder.

    Examples:
        >>> pref_name(3)
        'pref-03'
    """
    return f"pref-{i:02d}"


@dataclass(frozen=True)
class FinalModel:
    """One model a method hands to evaluation: a preference's finished policy."""

    model: str
    """Its name in the report (`pref-XX`)."""
    weights: np.ndarray
    """(M,) the preference it answers for."""
    adapter: Path
    """The adapter folder (or the whole model, without LoRA)."""
    done: Path
    """The file that exists once the model is finished."""
    tag: str | None = None
    """Text added to the prompt (RiC's desired rewards), or None."""
    tag_for: Callable[[ArrayLike], str | None] | None = field(default=None, compare=False, repr=False)
    """For a model that answers every preference (RiC: one model, asked by its prompt tag), the tag
    that asks it for any weights on the simplex; None for a model trained for its preference alone."""


Runner = Callable[[str, list[Callable[[], object]]], list]
"""Runs jobs of a kind (`train`, `generate`) together, elsewhere (`executor.attach`): for each job, in
order, its task record (wall_s, device, n_devices, node, host, pid) or the exception it raised."""

_FINISHED, _UNRECORDED = "finished", "unrecorded"
# files of the run folder that no step owns: bookkeeping, and the report written after the steps
_NOT_OUTPUTS = {"manifest.json", "config.yaml", "seed.json", "report.json", "report.md", "report.html", "front.png"}


def _mismatch(path: Path, want: dict) -> str | None:
    """Why `path` no longer is the file recorded as `want` (size and checksum), or None."""
    if not path.is_file():
        return "is missing"
    got = file_digest(path)
    if got["bytes"] != want["bytes"]:
        return f"has changed ({got['bytes']:,} bytes, {want['bytes']:,} when written)"
    return None if got["xxh3"] == want["xxh3"] else "has changed (same size, another checksum)"


def read_manifest(root: Path) -> dict:
    """A run folder's manifest (an empty one for a new folder).

    Raises:
        InputError: it exists but cannot be read.
    """
    path = root / "manifest.json"
    if not path.exists():
        return {"steps": {}}
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("steps"), dict):
            raise ValueError("no `steps` mapping")
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path} cannot be read ({str(e)[:120]}); it records which steps finished and checksums "
                         "of their files. Restore it, or delete it: steps whose last file is there are then "
                         "recorded afresh from what is on disk, the others redone") from None
    return manifest


def manifest_entry(wall: float, n_devices: int, busy_devices: int) -> dict:
    """A finished step's manifest record.

    `n_devices` are held for the whole step; `busy_devices` of them work (all of them while
    training, 1 while the main process alone scores or evaluates and the others wait). Device time
    is what the paper reports as GPU hours, wall x devices held: waiting devices are paid for too.

    Examples:
        >>> e = manifest_entry(10.0, n_devices=2, busy_devices=1)
        >>> e["device_s"], e["busy_device_s"]
        (20.0, 10.0)
    """
    # on CPU, the device is the machine (its cores)
    return {"wall_s": round(wall, 3), "device": device_name(), "n_devices": n_devices,
            "busy_devices": busy_devices, "device_s": round(wall * n_devices, 3),
            "busy_device_s": round(wall * busy_devices, 3),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


class RunFolder:
    """The run's folder, config, objectives, preferences and manifest.

    Args:
        cfg: the run's config; `cfg.runs_dir / cfg.name` is the folder unless `root` is given.
        root: an existing run folder (`paretohqd evaluate RUN`).
        read_only: a reader's view of a finished run (`serve`, `generate`, `export`, `paretohqd.load`,
            `evaluate --prompts`): nothing in the folder is written, moved or deleted; its steps
            cannot run (`step`, `record`).

    Raises:
        ConfigError: the folder was made with another config (the keys that differ are named).
        InputError: (read_only) a folder replacement in it is unfinished: a writer is at it, or was stopped.
    """

    def __init__(self, cfg: Config, root: str | Path | None = None, *, free: tuple[str, ...] = (),
                 read_only: bool = False):
        self.cfg = cfg
        self.free = free  # config sections that do not bind this folder (`config_differences`)
        self.root = Path(root) if root is not None else Path(cfg.runs_dir) / cfg.name
        self.read_only = read_only
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
            if self.state.is_main_process:
                for folder in recover_dirs(self.root):  # a folder swap a kill cut short (`io.atomic_dir`)
                    console.print(f"[yellow]recovered {folder} (a replacement of it was interrupted)[/]")
        self._check_config()
        self.manifest = read_manifest(self.root)
        self.n_devices = self.state.num_processes
        self.runner: Runner | None = None
        """Where `fan_out` blocks and `run_all` jobs run: None = here, inline (`executor.attach` sets it)."""
        self._queued: list | None = None  # inside `fan_out` with a runner: the steps to start at its end
        self._tasks: list[dict] = []  # task records of the running step's `run_all` jobs
        self._in_task = False

    def __getstate__(self) -> dict:
        # a step's function goes to a task with its closure, this object included: there it runs
        # inline, and may never write the manifest (its driver does, from what the task returns)
        return {**self.__dict__, "runner": None, "_queued": None, "_tasks": [], "_in_task": True}

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

    def _check_config(self) -> None:
        # a run folder holds one config: mixing outputs of two configs would report nonsense
        keys = config_differences(self.cfg, self.root, free=self.free)
        if keys:
            raise ConfigError(f"{self.root} was made with another config (differs in: {', '.join(keys)}); "
                              f"resume with the same config, or start a new run with --set name=NEW")
        if self.read_only:
            return
        # every process checks (so all stop on a mismatch); the main one writes, the others wait for it
        state = self.state
        if state.is_main_process:
            write_text(dump_config(self.cfg), self.path("config.yaml"))
            write_json({"seed": self.cfg.seed, "torch": torch.__version__, "processes": state.num_processes},
                       self.path("seed.json"))
        state.wait_for_everyone()

    def step(self, name: str, done: Path, fn: Callable[[], object], *, every_process: bool = False) -> None:
        """Run `fn` unless the step finished before; record wall time, device time and the size and
        checksum of every file it wrote (`outputs`) in the manifest.

        A step counts as finished when `done` exists and every file recorded for it still matches
        its record. Otherwise it is redone, with one line saying why; the files that no longer
        match (and `done`) are deleted first, so that `fn` cannot reuse them.

        Under a launcher only training runs on every process (`every_process`); the main process
        alone runs the other steps while the rest wait, so no file is written twice. The manifest
        charges every held device either way, and records how many worked (`manifest_entry`).
        """
        self._writable(name)
        # the main process decides and the others follow: all take the same branch, or their
        # barriers and collectives would pair up wrongly (and none may look after `done` is written)
        verdict = [self._verdict(name, done) if self.state.is_main_process else None]
        if self.n_devices > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(verdict, from_process=0)
        self.state.wait_for_everyone()
        if verdict[0] == _FINISHED:
            console.print(f"[dim]skip {name} (done)[/]")
            return
        if verdict[0] == _UNRECORDED:  # finished, but stopped before its record: recorded now, not redone
            console.print(f"[dim]skip {name} (done; recorded now, the run stopped before recording it)[/]")
            entry = {**manifest_entry(0.0, self.n_devices, 1), "recorded_late": True}
            if self.state.is_main_process:
                entry["outputs"] = self._outputs(name, self._files(), done)
            self.record(name, entry)
            return
        if verdict[0] is not None:
            console.print(f"[yellow]redo {name}: {verdict[0]}[/]")
        console.print(f"[bold]{name}[/]")
        if self._queued is not None:  # started with the block's other steps when it ends (`fan_out`)
            self._queued.append((name, done, fn))
            return
        before = self._files() if self.state.is_main_process else {}
        self._tasks = []
        t0 = time.perf_counter()
        if every_process or self.state.is_main_process:
            fn()
            # models a step loaded sit in reference cycles (trainers, hooks) until the collector runs:
            # free them now, so the next step (or the next method of `compare`) starts with the memory
            clear_device_cache(garbage_collection=True)
        self.state.wait_for_everyone()
        busy = self.n_devices if every_process else 1
        entry = manifest_entry(time.perf_counter() - t0, self.n_devices, busy)
        if self._tasks:  # the jobs this step ran elsewhere (`run_all`): where, for how long, on what
            entry["tasks"] = self._tasks
            for key in ("device_s", "busy_device_s"):
                entry[key] = round(entry[key] + sum(t["wall_s"] * t["n_devices"] for t in self._tasks), 3)
        if self.state.is_main_process:
            entry["outputs"] = self._outputs(name, before, done)
        self.record(name, entry)

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
        before = self._files()
        results = self.runner(kind, [fn for _, _, fn in queued])
        outputs = self._fanned_outputs(before, [done for _, done, _ in queued])
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

    def _fanned_outputs(self, before: dict, dones: list[Path]) -> list[dict[str, dict]]:
        """The outputs of steps that ran together: each one's done-marker, and the files in the
        marker's folder where no other step of the block shares it (a model's folder). A file that
        changed elsewhere cannot be told apart: it goes to each of them (none of ours writes such)."""
        after = self._files()
        owned = {rel for e in self.manifest["steps"].values() for rel in e.get("outputs", {})}
        rels = [str(d.relative_to(self.root)) for d in dones]
        folders = [str(Path(rel).parent) for rel in rels]
        claims = [{rel} | {f for f in after if folder != "." and folders.count(folder) == 1 and f not in owned
                           and Path(f).is_relative_to(folder)} for rel, folder in zip(rels, folders)]
        leftover = {rel for rel, sig in after.items() if before.get(rel) != sig} - set().union(*claims)
        return [{rel: file_digest(self.root / rel) for rel in sorted(mine | leftover) if (self.root / rel).is_file()}
                for mine in claims]

    # What a step wrote, and whether it is still there -----------------------------------------------

    def _files(self) -> dict[str, tuple[int, int, int]]:
        """Every output file under the run folder (relative path -> size, mtime, inode): not the
        bookkeeping and report files, logs, checkpoints or hidden temp files."""
        out = {}
        for folder, dirs, files in os.walk(self.root):
            top = folder == str(self.root)
            dirs[:] = [d for d in dirs if not d.startswith(".") and not d.endswith(".ckpt") and not (top and d == "logs")]
            for name in files:
                if name.startswith(".") or (top and name in _NOT_OUTPUTS):
                    continue
                st = os.stat(os.path.join(folder, name))
                out[os.path.relpath(os.path.join(folder, name), self.root)] = (st.st_size, st.st_mtime_ns, st.st_ino)
        return out

    def _outputs(self, name: str, before: dict, done: Path) -> dict[str, dict]:
        """The step's outputs with their digests: files it changed, `done`, and files in `done`'s
        own folder that no other step recorded (written by an attempt that was killed, then reused)."""
        after = self._files()
        owned = {rel for step, e in self.manifest["steps"].items() if step != name for rel in e.get("outputs", {})}
        mine = {rel for rel, sig in after.items() if before.get(rel) != sig}
        if self._inside(done):
            mine.add(str(done.relative_to(self.root)))
            if done.parent != self.root:
                folder = str(done.parent.relative_to(self.root))
                mine |= {rel for rel in after if rel not in owned and Path(rel).is_relative_to(folder)}
        return {rel: file_digest(self.root / rel) for rel in sorted(mine) if (self.root / rel).is_file()}

    def _inside(self, path: Path) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(self.root))

    def _verdict(self, name: str, done: Path) -> str | None:
        """`_FINISHED`, `_UNRECORDED`, None (never ran: run it) or why it must be redone (its bad files
        deleted)."""
        entry = self.manifest["steps"].get(name)
        if not self._inside(done):  # a shared cache's marker (offline reward heads): its own checks
            return _FINISHED if done.exists() else None
        rel = str(done.relative_to(self.root))
        if entry is None:
            # every step writes its done-marker last, after its other files were fsynced and renamed
            # into place: a marker without a record means the run stopped between the two
            return _UNRECORDED if done.exists() else None
        bad = [(f, why) for f, want in entry.get("outputs", {}).items() if (why := _mismatch(self.root / f, want))]
        if done.exists() and not bad:
            return _FINISHED
        if not done.exists() and not any(f == rel for f, _ in bad):
            bad.insert(0, (rel, "is missing"))
        for f, _ in bad:
            (self.root / f).unlink(missing_ok=True)
        done.unlink(missing_ok=True)
        del self.manifest["steps"][name]
        write_json(self.manifest, self.path("manifest.json"))
        more = f" (and {len(bad) - 1} more file(s))" if len(bad) > 1 else ""
        return f"{bad[0][0]} {bad[0][1]}{more}; doing it again"

    def record(self, name: str, entry: dict) -> None:
        """Add (or replace) one step's record in `manifest.json` (main process only)."""
        self._writable(name)
        if self._in_task:
            raise RuntimeError(f"step {name!r} would be recorded inside a task; its driver records it")
        if not self.state.is_main_process:
            return
        self.manifest["steps"][name] = entry
        write_json(self.manifest, self.path("manifest.json"))

    def _writable(self, name: str) -> None:
        if self.read_only:
            raise RuntimeError(f"step {name!r} would write {self.root}, opened read-only (a reader of the run)")

    def print_times(self) -> None:
        table = Table(title=f"where the time went ({self.root})")
        for col in ("step", "wall s", "device s"):
            table.add_column(col, justify="left" if col == "step" else "right")
        steps = self.manifest["steps"]
        for name, s in steps.items():
            table.add_row(name, f"{s['wall_s']:.1f}", f"{s['device_s']:.1f}")
        table.add_row("total", f"{sum(s['wall_s'] for s in steps.values()):.1f}",
                      f"{sum(s['device_s'] for s in steps.values()):.1f}")
        console.print(table)


def _raise_first(results: list) -> None:
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]


def config_differences(cfg: Config, root: Path, *, free: tuple[str, ...] = ()) -> list[str]:
    """The dotted keys in which `cfg` differs from the config a run folder was made with (none for a
    new folder). Keys a newer paretohqd added (absent from the old file) take their defaults: no change.
    Keys of the `free` sections never count, nor those of `compare` and `executor`: sections the run's
    method does not read (`methods.unread_sections`: a ParetoHqD run ignores `morlhf`), the list of
    runs a comparison makes, and where the steps run (`executor`): so tuning one baseline, adding a method or
    resuming on a cluster keeps every other finished run."""
    path = Path(root) / "config.yaml"
    text = dump_config(cfg)
    if not path.is_file():
        return []
    import yaml

    try:
        stored = path.read_text()
        if stored == text:
            return []
        old = yaml.safe_load(stored)
        if not isinstance(old, dict):
            raise ValueError("not a mapping of sections")
    except (ValueError, yaml.YAMLError) as e:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{path} cannot be read ({str(e).splitlines()[0][:120]}); it is the config this run was "
                          "made with: restore it, or delete it to take the config you gave") from None
    old, new = _flatten(old), _flatten(yaml.safe_load(text))
    free = ("compare", "executor", *free)
    return sorted(k for k in old if old[k] != new.get(k) and k.split(".")[0] not in free)


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out
