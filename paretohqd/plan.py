"""`paretohqd plan CONFIG`: a run's units (`paretohqd.units`) for a scheduler, each with what it needs
done first, the resources it runs with, its estimated device time and whether it is done.

The estimates are `budget.step_seconds` under a cost model (`COSTS`): measured on 2 CPU cores with
SmolLM2-135M, or assumed for Llama-2 7B on one H100 (`budget.H100_LLAMA2_7B`: not measured).
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from paretohqd import methods
from paretohqd.budget import H100_LLAMA2_7B, CostModel, step_seconds
from paretohqd.config import Config, ConfigError
from paretohqd.pareto.preferences import preferences_from_config
from paretohqd.runfolder import Unit, config_differences
from paretohqd.units import done, run_units, waves

COSTS = {"smollm2-cpu": CostModel(), "llama2-7b-h100-assumed": H100_LLAMA2_7B}
"""The cost models `--costs` chooses from: the first measured (2 CPU cores), the second assumed."""

_LIGHT = {"num_cpus": 1, "num_gpus": 0}  # data, selection, the report: one core, no accelerator


def plan(cfg: Config, costs: str = "smollm2-cpu") -> dict:
    """The run's units as JSON-ready data: `run` (the folder), `method`, `waves` (name -> unit ids, in
    the order they run) and `units` (id, step, wave, needs, resources, estimated_device_s, done).

    Raises:
        ConfigError: a method without units, an unknown cost model, or a run folder made with
            another config (its done units would not be this config's).
    """
    if costs not in COSTS:
        raise ConfigError(f"--costs {costs!r}: choose one of {', '.join(COSTS)}")
    cfg = methods.configure(cfg)
    root = Path(cfg.runs_dir) / cfg.name
    units = run_units(cfg)
    differs = config_differences(cfg, root, free=methods.unread_sections(cfg))
    if differs:
        raise ConfigError(f"name: {root} was made with another config (differs in: {', '.join(differs)}); "
                          "plan the config it was made with, or a new run with --set name=NEW")
    finished = done(units, root)
    seconds = _estimates(cfg, COSTS[costs])
    return {"run": str(root), "method": cfg.method, "costs": costs,
            "waves": {w: [u.id for u in us] for w, us in waves(units).items()},
            "units": [{"id": u.id, "step": u.step, "wave": u.wave, "needs": list(u.needs),
                       "resources": _resources(cfg, u), "estimated_device_s": round(seconds.get(u.wave, 0.0), 1),
                       "done": finished[u.id]} for u in units]}


def _resources(cfg: Config, u: Unit) -> dict:
    """What the unit runs with: `executor.train` / `executor.generate` (a GPU where there is one:
    `num_gpus` None), or one core for a light unit."""
    if u.kind is None:
        return {"executor": None, **_LIGHT}
    return {"executor": f"executor.{u.kind}", **getattr(cfg.executor, u.kind).model_dump()}


def _estimates(cfg: Config, costs: CostModel) -> dict[str, float]:
    """Estimated device seconds of one unit of each wave (waves not named here: ~0, data and selection)."""
    s = step_seconds(cfg, costs)
    n_models = len(preferences_from_config(cfg.select.preferences, len(cfg.rewards.models))) + 1  # and the base
    return {"score": costs.run_overhead_s, "stage1": s["stage1 training, per preference"],
            "stage2-generate": s["stage2 generation, per representative"],
            "stage2": s["stage2 training, per preference"], "evaluate": n_models * s["evaluation, per model"]}


def plan_table(p: dict) -> Table:
    """`plan`'s units as a table, wave by wave (`#`: the unit's index in its wave, `--unit-index`)."""
    table = Table(title=f"units of {p['run']} ({p['method']}; estimates with {p['costs']} costs)")
    for col in ("wave", "#", "unit", "needs", "resources", "device time", "done"):
        table.add_column(col, justify="right" if col in ("#", "device time") else "left", no_wrap=col == "unit")
    index: dict[str, int] = {}
    for u in p["units"]:
        i = index[u["wave"]] = index.get(u["wave"], -1) + 1
        needs = ", ".join(u["needs"]) if len(u["needs"]) <= 2 else f"{len(u['needs'])} units"
        res, gpus = u["resources"]["executor"], u["resources"]["num_gpus"]
        res = "light" if res is None else res.split(".")[1] + ("" if gpus is None else f", {gpus:g} GPU")
        table.add_row(u["wave"], str(i), u["id"], needs or "-", res, _duration(u["estimated_device_s"]),
                      "done" if u["done"] else "")
    return table


def _duration(s: float) -> str:
    """
    Examples:
        >>> _duration(0.0), _duration(29), _duration(95), _duration(7260)
        ('~0', '29 s', '2 min', '2.0 h')
    """
    if s < 1:
        return "~0"
    if s < 60:
        return f"{s:.0f} s"
    return f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"
