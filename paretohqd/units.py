"""A run as units (`paretohqd plan`, `paretohqd run CONFIG --unit ID`): its steps that a scheduler
(Slurm arrays, Kubernetes indexed jobs, SkyPilot) may start one by one, each as its own process,
several at once on shared storage, in waves ordered by what each unit reads.

The units are the pipeline's steps: `prepare`, `rewards` (offline heads, when the run uses them),
`score`, the method's own (`units(cfg, root)` of its module: for ParetoHqD `select`,
`stage1/pref-XX`, `stage2/generate pref-XX`, `stage2/score`, `stage2/select`, `stage2/pref-XX`),
`evaluate` (after the method's last wave: its final models) and `report`. Their ids name them the
same in every call, and whether one is done is read from the run folder's manifest
(`runfolder.finished`), never changing it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from paretohqd import methods
from paretohqd.config import Config, ConfigError
from paretohqd.rewards import OFFLINE, head_marker
from paretohqd.runfolder import Unit, finished, read_manifest

REPORT = "report"
"""The last unit, which only writes the report (no step, no record: the report is written after
every whole run too)."""


def rewards_marker(cfg: Config) -> Path | None:
    """The done-marker of the `rewards` step (offline heads, in the shared cache `rewards.dir`): a
    missing head's, or any head's if none is missing; None where the run uses no offline head."""
    offline = [n for n in cfg.rewards.models.values() if n in OFFLINE]
    missing = [n for n in offline if not head_marker(cfg.rewards, n).exists()]
    return head_marker(cfg.rewards, (missing or offline)[0]) if offline else None


def run_units(cfg: Config) -> list[Unit]:
    """The units of `cfg`'s run, in an order that runs each after those it needs.

    Raises:
        ConfigError: the method has no units (`units` in its module): it runs whole.
    """
    cfg = methods.configure(cfg)
    root = Path(cfg.runs_dir) / cfg.name
    own = getattr(methods.module(cfg), "units", None)
    if own is None:
        with_units = ", ".join(m for m, spec in methods.METHODS.items() if hasattr(spec.module, "units"))
        raise ConfigError(f"method: {cfg.method!r} runs whole (`paretohqd run CONFIG`); units for a scheduler "
                          f"exist for {with_units}")
    marker = rewards_marker(cfg)
    out = [Unit("prepare", "prepare", "prepare", (), None, root / "data" / "train.parquet")]
    if marker is not None:
        out.append(Unit("rewards", "rewards", "rewards", (), "train", marker))
    # scoring runs the reward models over every sample: the resources of generation (forward passes)
    out.append(Unit("score", "score", "score", ("prepare", *(["rewards"] if marker else [])), "generate",
                    root / "data" / "scores.parquet"))
    # the method's units that need none of its others read the scored data
    mine = [u if u.needs else dataclasses.replace(u, needs=("score",)) for u in own(cfg, root)]
    last = [u.id for u in mine if u.wave == mine[-1].wave]  # its final models
    return [*out, *mine,
            Unit("evaluate", "evaluate", "evaluate", tuple(last), "generate", root / "evaluate" / "responses.parquet"),
            Unit(REPORT, REPORT, REPORT, ("evaluate",), None, root / "report.json")]


def waves(units: list[Unit]) -> dict[str, list[Unit]]:
    """The units by wave, waves in the order they run (each needs only units of earlier ones)."""
    out: dict[str, list[Unit]] = {}
    for u in units:
        out.setdefault(u.wave, []).append(u)
    return out


def done(units: list[Unit], root: Path) -> dict[str, bool]:
    """Whether each unit is done in the run folder `root` (read only)."""
    manifest = read_manifest(root)
    return {u.id: u.done.exists() if u.id == REPORT else finished(root, manifest, u.step, u.done) for u in units}


def pick(units: list[Unit], unit: str | None = None, *, wave: str | None = None, index: int | None = None) -> Unit:
    """The unit named `unit`, or the `index`-th of `wave` (an array job's task).

    Raises:
        ConfigError: no such unit, wave or index (the choices are named).
    """
    if unit is not None:
        for u in units:
            if u.id == unit:
                return u
        raise ConfigError(f"--unit {unit!r}: no such unit; the run's units (`paretohqd plan CONFIG`): "
                          + ", ".join(u.id for u in units))
    by_wave = waves(units)
    if wave not in by_wave:
        raise ConfigError(f"--wave {wave!r}: no such wave; choose one of {', '.join(by_wave)}")
    if index is None or not 0 <= index < len(by_wave[wave]):
        raise ConfigError(f"--unit-index {index}: wave {wave!r} has {len(by_wave[wave])} unit(s), "
                          f"indices 0 to {len(by_wave[wave]) - 1}")
    return by_wave[wave][index]
