"""A run folder (`runs_dir/NAME/`): its named paths, its one config, and `manifest.json`, the record
of which steps finished and what each cost. This module is the only writer of the manifest.

Every step writes its outputs atomically and is recorded with its wall and device time. A rerun
skips finished steps; a killed run resumes from the last finished step, and training resumes
from its last checkpoint inside a step.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils.memory import clear_device_cache
from rich.table import Table

from paretohqd.config import Config, ConfigError, dump_config
from paretohqd.devices import device_name
from paretohqd.io import write_json, write_text
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

    Raises:
        ConfigError: the folder was made with another config (the keys that differ are named).
    """

    def __init__(self, cfg: Config, root: str | Path | None = None):
        self.cfg = cfg
        self.root = Path(root) if root is not None else Path(cfg.runs_dir) / cfg.name
        self.root.mkdir(parents=True, exist_ok=True)
        self.objectives: list[str] = list(cfg.rewards.models)
        try:
            self.preferences: np.ndarray = preferences_from_config(cfg.select.preferences, len(self.objectives))  # (P, M)
        except ValueError as e:
            raise ConfigError(f"select.preferences: {e}") from None
        self._check_config()
        path = self.path("manifest.json")
        self.manifest = json.loads(path.read_text()) if path.exists() else {"steps": {}}
        self.n_devices = self.state.num_processes

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
        keys = config_differences(self.cfg, self.root)
        if keys:
            raise ConfigError(f"{self.root} was made with another config (differs in: {', '.join(keys)}); "
                              f"resume with the same config, or start a new run with --set name=NEW")
        # every process checks (so all stop on a mismatch); the main one writes, the others wait for it
        state = self.state
        if state.is_main_process:
            write_text(dump_config(self.cfg), self.path("config.yaml"))
            write_json({"seed": self.cfg.seed, "torch": torch.__version__, "processes": state.num_processes},
                       self.path("seed.json"))
        state.wait_for_everyone()

    def step(self, name: str, done: Path, fn: Callable[[], object], *, every_process: bool = False) -> None:
        """Run `fn` unless `done` exists; record wall time and device time in the manifest.

        Under a launcher only training runs on every process (`every_process`); the main process
        alone runs the other steps while the rest wait, so no file is written twice. The manifest
        charges every held device either way, and records how many worked (`manifest_entry`).
        """
        # every process looks before any passes the barrier (and so before the main one can write
        # `done`): all take the same branch, or their barriers and collectives would pair up wrongly
        finished = done.exists()
        self.state.wait_for_everyone()
        if finished:
            console.print(f"[dim]skip {name} (done)[/]")
            return
        console.print(f"[bold]{name}[/]")
        t0 = time.perf_counter()
        if every_process or self.state.is_main_process:
            fn()
            # models a step loaded sit in reference cycles (trainers, hooks) until the collector runs:
            # free them now, so the next step (or the next method of `compare`) starts with the memory
            clear_device_cache(garbage_collection=True)
        self.state.wait_for_everyone()
        busy = self.n_devices if every_process else 1
        self.record(name, manifest_entry(time.perf_counter() - t0, self.n_devices, busy))

    def record(self, name: str, entry: dict) -> None:
        """Add (or replace) one step's record in `manifest.json` (main process only)."""
        if not self.state.is_main_process:
            return
        self.manifest["steps"][name] = entry
        write_json(self.manifest, self.path("manifest.json"))

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


def config_differences(cfg: Config, root: Path) -> list[str]:
    """The dotted keys in which `cfg` differs from the config a run folder was made with (none for a
    new folder). Keys a newer paretohqd added (absent from the old file) take their defaults: no change."""
    path = Path(root) / "config.yaml"
    text = dump_config(cfg)
    if not path.exists() or path.read_text() == text:
        return []
    import yaml

    old, new = _flatten(yaml.safe_load(path.read_text())), _flatten(yaml.safe_load(text))
    return sorted(k for k in old if old[k] != new.get(k))


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out
