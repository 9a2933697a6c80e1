"""`paretohqd compare CONFIG`: every method of `compare.methods` in one harness, one table, one plot.

Each method is a separate run, `runs_dir/NAME-METHOD`, made from CONFIG with `method` (and what it
implies) changed. The first method's run prepares the data, scores it, and fixes the held-out
prompts and the hypervolume box (`evaluate/bounds.json`); every later run gets those files
hard-linked in (outputs are written once and replaced atomically, never edited in place, so a
link is a read-only share), so all methods train on the same samples and answer the same prompts
in the same box. The shared steps' manifest entries are copied too, marked `shared_from`: each
method's compute includes preparing and scoring the data, which every method needs (MORLHF
normalises its rewards with the scores' statistics), although the machine did it once.

`stage1-only` is ParetoHqD stopped after stage 1: when `paretohqd` ran before it with the same
selection and training settings, its stage-1 models are shared the same way (and charged to it;
`Method.shares_stage1_of`). So is the SFT model that MORLHF, Rewarded Soups' RL and MODPO start
from (`methods.start`, `RUN/sft`): trained by the first of them, linked into the others whose settings
that decide it (`SFT_KEYS`) agree.
The untuned base model's answers are shared too (same model, prompts and seed); evaluation is
not part of the compute column.

Outputs in `runs_dir/NAME-compare/`: report.json/.md/.html and front.png (`write_report` over the
runs, measured in the first run's box) and compare.json/compare.md, the main table: method,
hypervolume (data box, with the difference to the first method), collapse rate, compute hours and
compute relative to ParetoHqD, then the hypervolume under the z-score and fronts normalisations
and the front's spacing and sparsity, each hypervolume header with its reference point.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table

from paretohqd import methods, pipeline
from paretohqd.budget import H100_LLAMA2_7B, budget_markdown, budget_table, estimate_seconds
from paretohqd.config import Config, ConfigError, dump_config
from paretohqd.io import read_table, write_json, write_text
from paretohqd.lock import hold
from paretohqd.methods import REFERENCE, start
from paretohqd.progress import console as default_console
from paretohqd.report import write_report
from paretohqd.devices import init_processes
from paretohqd.report.evidence import DIGITS, value_cell
from paretohqd.report.render import (control_md, hv_cell, hv_column, hv_delta_cell, md_table, norm_cell,
                                     normalisation_lines)
from paretohqd.runfolder import RunFolder, read_manifest

SHARED_FILES = ("data/all.parquet", "data/train.parquet", "data/heldout.parquet", "data/scores.parquet",
                "data/scores.stats.json", "evaluate/bounds.json", "evaluate/responses/base.parquet")
SHARED_STEPS = ("prepare", "rewards", "score")
# the config sections that decide ParetoHqD's stage-1 models
STAGE1_KEYS = ("seed", "data", "policy", "rewards", "select", "train")
# the config sections that decide the SFT start (the chosen answers of the training data's pairs)
SFT_KEYS = ("seed", "data", "policy", "train", "sft_start")
HEADER = ["method", "what", "hypervolume [95%]", "HV - first [95%]", "collapse rate", "compute (device h)",
          "compute vs ParetoHqD"]
# after HEADER: the other normalisations' hypervolumes (headers with their reference points), spread
OTHER_NORMALISATIONS = ("zscore", "fronts")
SPREAD = ["spacing (data box)", "sparsity (data box)"]
# after SPREAD: where each method's models sit along the front (compare.md's controllability table has
# every indicator with its paired difference to the first method)
CONTROL = {"calibration_deg": "calibration, deg (fronts box) [95%]", "largest_hole": "largest hole (fronts box) [95%]"}


def header(report: dict) -> list[str]:
    """HEADER with the data box's reference point in its hypervolume header, then the z-score and
    fronts hypervolumes (their references in the headers) and the spread columns."""
    data = hv_column(report, "data") if "data" in report.get("normalisations", {}) else HEADER[2]
    others = [hv_column(report, n) for n in OTHER_NORMALISATIONS if n in report.get("normalisations", {})]
    return HEADER[:2] + [data] + HEADER[3:] + others + SPREAD + list(CONTROL.values())


def method_config(cfg: Config, method: str) -> Config:
    """CONFIG with `method` set (and the settings it implies), named NAME-METHOD."""
    return methods.configure(cfg.model_copy(update={"name": f"{cfg.name}-{method}"}), method)


def share(src: Path, dst: RunFolder, files: list[str], steps: tuple[str, ...]) -> list[str]:
    """Hard-link `files` (relative paths) from run `src` into run `dst` and copy the manifest
    entries of the steps that made them (names equal to, or starting with "X/", a name in
    `steps`), marked `shared_from`. Files `dst` already has are kept. Returns the linked paths.
    """
    linked = []
    for rel in files:
        a, b = src / rel, dst.root / rel
        if not a.exists() or b.exists():
            continue
        b.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(a, b)
        except OSError:  # another file system, or links not allowed: a copy shares the same bytes
            shutil.copy2(a, b)
        linked.append(rel)
    for name, entry in read_manifest(src)["steps"].items():  # (units' records too)
        if name not in dst.manifest["steps"] and any(name == s or name.startswith(s + "/") for s in steps):
            dst.record(name, {**entry, "shared_from": str(src)})
    return linked


def _files(root: Path, folder: str) -> list[str]:
    return [str(p.relative_to(root)) for p in sorted((root / folder).rglob("*")) if p.is_file()]


def _share_sft_start(roots: dict[str, Path], subs: dict[str, Config], dst: RunFolder) -> None:
    """Link the SFT start of an earlier run with the same `SFT_KEYS` into `dst`, if its method starts
    from one (its `work` counts `sft_start_samples`)."""
    if not methods.module(dst.cfg).work(dst.cfg).get("sft_start_samples"):
        return
    for method, root in roots.items():
        if (root / start.FOLDER / "train.json").exists() and _same(subs[method], dst.cfg, SFT_KEYS):
            share(root, dst, _files(root, start.FOLDER), (start.FOLDER,))
            return


def _same(a: Config, b: Config, keys: tuple[str, ...]) -> bool:
    da, db = a.model_dump(mode="json"), b.model_dump(mode="json")
    return all(da[k] == db[k] for k in keys)


def print_estimate(cfg: Config, *, paper_table: bool = False) -> None:
    """Print `budget.estimate_seconds` per method (the training set's size, which `full-data-epochs`
    and `modpo.epochs` need, from the first run's scored data once it exists), and with `paper_table`
    the one-GPU estimate beside the paper's GPU hours (`print_budget_table`, what `compare --estimate`
    shows)."""
    first = method_config(cfg, cfg.compare.methods[0])
    scores = Path(first.runs_dir) / first.name / "data" / "scores.parquet"
    n_samples = len(read_table(scores)) if scores.exists() else None
    est = estimate_seconds(cfg, n_samples=n_samples)
    known = {m: s for m, s in est.items() if s == s}  # NaN: not known yet
    default_console.print(f"compare: {len(est)} methods; estimate for SmolLM2-135M on 2 CPU cores: "
                          f"{sum(known.values()) / 3600:.1f} h (" + ", ".join(f"{m} {s / 60:.0f} min" if s < 7200 else f"{m} {s / 3600:.1f} h" for m, s in known.items())
                          + "); other models and machines scale it"
                          + (f"; {', '.join(m for m in est if m not in known)}: known once the first run has scored its "
                             "data" if len(known) < len(est) else ""))
    if paper_table:
        print_budget_table(cfg, n_samples)


def print_budget_table(cfg: Config, n_samples: int | None = None) -> None:
    """`budget.budget_table` under the assumed one-GPU Llama-2 7B cost model, beside the paper's GPU
    hours: whether a comparison has the paper's proportions, before anything is paid for."""
    default_console.print("\nOne H100-class GPU, Llama-2 7B with LoRA (budget.H100_LLAMA2_7B: an assumed, not "
                          "measured, cost model), beside the GPU hours the ParetoHqD paper reports "
                          "(~: derived from its text; -: none reported or not known yet):")
    default_console.print(budget_markdown(budget_table(cfg, H100_LLAMA2_7B, n_samples)), markup=False, highlight=False,
                          soft_wrap=True)


def compare(cfg: Config) -> Path:
    """Run every method of `cfg.compare.methods` (resumable), then write the comparison. The
    comparison folder is locked for the whole time (`lock.hold`), each run folder while it runs.

    Returns:
        The path of NAME-compare/compare.json.

    Raises:
        BusyError: another process is running this comparison (or one of its runs).
        ConfigError: `method` is set in CONFIG (compare sets it per run), or an unknown method.
    """
    with hold(Path(cfg.runs_dir) / f"{cfg.name}-compare"):
        return _compare(cfg)


def _compare(cfg: Config) -> Path:
    if cfg.method != Config.model_fields["method"].default:
        raise ConfigError(f"compare sets `method` for each run from compare.methods; leave `method` unset "
                          f"(got method: {cfg.method})")
    subs = {method: method_config(cfg, method) for method in cfg.compare.methods}  # every name checked first
    print_estimate(cfg)
    state = init_processes()  # under a launcher: the group forms before any run folder asks who is main
    roots: dict[str, Path] = {}
    for method, sub in subs.items():
        with hold(Path(sub.runs_dir) / sub.name):  # from the shared files on (pipeline.run holds it again)
            if roots:
                first = next(iter(roots.values()))
                dst = RunFolder(sub, free=methods.unread_sections(sub))
                if state.is_main_process:  # links and manifest entries: once, like every other file
                    share(first, dst, list(SHARED_FILES), SHARED_STEPS)
                    donor = methods.METHODS[method].shares_stage1_of
                    if donor in roots and _same(subs[donor], sub, STAGE1_KEYS):
                        share(roots[donor], dst, _files(roots[donor], "stage1"), ("select", "stage1"))
                    _share_sft_start(roots, subs, dst)
                state.wait_for_everyone()
            default_console.rule(f"[bold]compare: {method}[/] ({Path(sub.runs_dir) / sub.name})")
            roots[method] = pipeline.run(sub)
    if not state.is_main_process:
        return Path(cfg.runs_dir) / f"{cfg.name}-compare" / "compare.json"
    return write_comparison(cfg, roots)


def write_comparison(cfg: Config, roots: dict[str, Path], *, console: Console | None = None) -> Path:
    """The overlaid report (report.*, front.png) and the main table (compare.json/.md) of the runs."""
    out = Path(cfg.runs_dir) / f"{cfg.name}-compare"
    report = json.loads(write_report(list(roots.values()), out, console=console, html=cfg.evaluate.html).read_text())
    rows = comparison_rows(list(roots), report)
    write_text(dump_config(cfg), out / "config.yaml")
    cols = header(report)
    md = ["# Methods compared", "", f"Runs: {', '.join(str(r) for r in roots.values())}. "
          "Hypervolume of each method's mean-reward points in the first run's box, with a 95% bootstrap "
          "interval over the held-out prompts; `HV - first`: the difference to the first method with a "
          "paired interval (the same prompt draws), so an interval holding 0 means no evidence either "
          "way; collapse rate over "
          "every preference model's held-out answers; compute = device hours of every step but "
          "evaluation (shared data preparation and scoring charged to every method). The same points "
          "are also measured z-scored and in the box of all the models' points (differences to the "
          "first method for those in report.md); spacing and sparsity of each front in the data box. "
          "The normalisations, each header naming its reference point in raw rewards:", "",
          *[f"- {line}" for line in normalisation_lines(report)], "",
          md_table(cols, [_cells(r) for r in rows]), "", *control_md(report)]
    write_text("\n".join(md) + "\nPlot: front.png; per-preference details: report.md\n", out / "compare.md")
    path = write_json({"methods": rows, "normalisations": report.get("normalisations"),
                       "report": str(out / "report.json")}, out / "compare.json")
    table = Table(title=f"methods compared ({out})")
    for col in cols:  # fold, not cut: the hypervolume headers carry their reference points
        table.add_column(col, justify="left" if col in ("method", "what") else "right", overflow="fold")
    for r in rows:
        table.add_row(*_cells(r))
    (console or default_console).print(table)
    return path


def comparison_rows(methods: list[str], report: dict, *, reference: str = REFERENCE) -> list[dict]:
    """One row per method (in `methods` order, matching report["methods"]): hypervolume (data box),
    collapse rate, compute and compute relative to the `reference` run (None without one), and
    `hypervolumes`: every normalisation's hypervolume, interval, difference to the first method,
    spacing and sparsity (report["methods"][i]["hypervolumes"]; None in reports without them),
    `control` (controllability in the fronts box, `report.indicators`) and `change_vs_base`.

    Examples:
        >>> rep = {"methods": [{"method": "x-paretohqd", "description": "d", "hypervolume": 0.5,
        ...     "collapse_rate": 0.1, "compute": {"training": {"device_h": 2.0, "wall_h": 2.0}}},
        ...     {"method": "x-ric", "description": "e", "hypervolume": 0.4, "collapse_rate": 0.2,
        ...     "compute": {"training": {"device_h": 5.0, "wall_h": 5.0}}}]}
        >>> [r["relative_compute"] for r in comparison_rows(["paretohqd", "ric"], rep)]
        [1.0, 2.5]
    """
    entries = dict(zip(methods, report["methods"]))
    ref = entries.get(reference)
    ref_h = ref["compute"]["training"]["device_h"] if ref else None
    rows = []
    for method, m in entries.items():
        hours = m["compute"]["training"]["device_h"]
        rows.append({"method": method, "run": m["method"], "description": m["description"],
                     "hypervolume": m["hypervolume"], "hypervolume_ci95": m.get("hypervolume_ci95"),
                     "hypervolume_vs_first": m.get("hypervolume_vs_first"), "collapse_rate": m["collapse_rate"],
                     "compute_device_h": hours, "compute_wall_h": m["compute"]["training"]["wall_h"],
                     "relative_compute": hours / ref_h if ref_h else None,
                     "hypervolumes": m.get("hypervolumes"), "control": m.get("control"),
                     "change_vs_base": m.get("change_vs_base")})
    return rows


def _cells(r: dict) -> list[str]:
    rel = "-" if r["relative_compute"] is None else f"{r['relative_compute']:.2f}x"
    hv = r.get("hypervolumes") or {}
    others = [norm_cell(hv[n]) for n in OTHER_NORMALISATIONS if n in hv]
    data = hv.get("data") or {}
    spread = ["-" if data.get(k) is None else f"{data[k]:.4f}" for k in ("spacing", "sparsity")]
    control = r.get("control") or {}
    placed = [value_cell(control.get(k), DIGITS[k]) for k in CONTROL]
    return [r["method"], r["description"], hv_cell(r), hv_delta_cell(r), f"{r['collapse_rate']:.1%}",
            f"{r['compute_device_h']:.3f}", rel, *others, *spread, *placed]
