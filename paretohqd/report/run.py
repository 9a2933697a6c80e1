"""`paretohqd report RUN [RUN...]`: report.json, report.md, front.png and report.html, and the
tables printed.

One run: written into the run folder. Several runs (methods): one table and one picture that
overlay them, measured in the first run's box (its bounds and training cloud), written by default
to runs_dir/compare-NAME1-NAME2-... beside the first run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from paretohqd.io import InputError, read_table, write_json, write_text
from paretohqd.progress import console as default_console
from paretohqd.report.html import write_html
from paretohqd.report.indicators import measure_control
from paretohqd.report.plot import plot_fronts
from paretohqd.report.render import print_tables, report_md
from paretohqd.report.summary import load_run, summarise_runs


def default_out(roots: list[Path]) -> Path:
    """The run folder for one run; runs_dir/compare-A-B-... for several."""
    if len(roots) == 1:
        return roots[0]
    return roots[0].parent / ("compare-" + "-".join(r.name for r in roots))


def build_report(roots: list[str | Path]) -> tuple[dict, list[dict]]:
    """The report dict (what report.json holds) and the loaded runs.

    Raises:
        InputError: no runs, a run not evaluated, or runs with different objectives.
    """
    if not roots:
        raise InputError("no run folders given; pass at least one, e.g. paretohqd report runs/demo")
    runs = [load_run(r) for r in roots]
    first = runs[0]
    names = first["meta"]["objectives"]
    for r in runs[1:]:
        if r["meta"]["objectives"] != names:
            raise InputError(f"{r['root']} has objectives {r['meta']['objectives']} but {first['root']} has "
                             f"{names}; runs compared in one report must share their objectives")
    bounds = first["bounds"]
    methods, norms = summarise_runs(runs)
    measure_control(methods, runs, norms)
    report = {"bounds": bounds, "bounds_from": str(first["root"] / bounds["source"]),
              "reference": {"normalised": bounds["ref_normalised"], "raw": bounds["ref_raw"],
                            "what": "the normalised nadir: per-objective minimum of the scored training data"},
              "hypervolume": {m["method"]: m["hypervolume"] for m in methods},
              "normalisations": norms,
              "hypervolumes": {name: {m["method"]: None if m["hypervolumes"][name] is None
                                      else m["hypervolumes"][name]["hypervolume"] for m in methods}
                               for name in norms},
              "methods": methods}
    return report, runs


def write_report(roots: list[str | Path], out: str | Path | None = None, *, console: Console | None = None,
                 html: bool = True) -> Path:
    """Write report.json, report.md, front.png and report.html for one or more evaluated runs; print
    the tables.

    Args:
        roots: run folders, each with a finished `evaluate/`.
        out: folder to write to; default `default_out(roots)`.
        console: where to print (default: the terminal).
        html: also write report.html (the fronts and answers to explore in a browser, ~5 MB).

    Returns:
        The path of report.json.
    """
    roots = [Path(r) for r in roots]
    report, runs = build_report(roots)
    out = Path(out) if out is not None else default_out(roots)
    names = report["bounds"]["objectives"]
    cloud_path = runs[0]["root"] / report["bounds"]["source"]
    scores = read_table(cloud_path)
    cloud = scores[names].to_numpy()  # (N, M)
    methods = [_plot_entry(m, names) for m in report["methods"]]
    title = f"mean reward on held-out prompts (bars: 95% interval)\ngrey: training data of {runs[0]['root'].name}"
    png = plot_fronts(methods, cloud, objectives=names, lower=report["bounds"]["lower"],
                      upper=report["bounds"]["upper"], path=out / "front.png", title=title)
    samples = {m["method"]: _samples(r) for m, r in zip(report["methods"], runs)}
    write_text(report_md(report, samples, png.name), out / "report.md")
    written = [out / "report.md", png]
    if html:
        written.append(write_html(report, runs, scores, out / "report.html", title=_html_title(runs)))
    path = write_json(report, out / "report.json")
    print_tables(report, console)
    (console or default_console).print(f"report: {path}, " + ", ".join(str(p) for p in written))
    return path


def _html_title(runs: list[dict]) -> str:
    names = ", ".join(r["root"].name for r in runs)
    if len(runs) == 1:
        return f"ParetoHqD report: {names}"
    return f"ParetoHqD report: {names} (in {runs[0]['root'].name}'s box)"


def _plot_entry(method: dict, names: list[str]) -> dict:
    def arr(key: str, i: int | None = None) -> np.ndarray:
        vals = [[(r[key][o] if i is None else r[key][o][i]) for o in names] for r in method["models"]]
        return np.array(vals, dtype=np.float64)  # (P, M); None (no interval) becomes NaN

    base = method["base"]
    return {"label": method["method"], "points": arr("mean"), "lo": arr("ci95", 0), "hi": arr("ci95", 1),
            "weights": [r["weights"] for r in method["models"]],
            "base": None if base is None else [base["mean"][o] for o in names]}


def _samples(run: dict) -> pd.DataFrame:
    """The first `samples` held-out prompts' answers of every model."""
    df = run["responses"]
    first = df["prompt_id"].drop_duplicates().head(run["meta"]["samples"])
    return df[df["prompt_id"].isin(first)]
