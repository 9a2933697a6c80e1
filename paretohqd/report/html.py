"""report.html: the report's fronts and answers to explore in a browser, one self-contained file.

Plotly draws the fronts over the training cloud (its JavaScript inlined from the `plotly` package,
so the file works offline); a little plain JavaScript (`page.html`) lists a clicked model's answers
beside the base model's and a chosen one's, and highlights its preference's selected training
samples on the cloud.

Prompts and answers are untrusted text. They travel as JSON inside a
`<script type="application/json">` element, with `<`, `>` and `&` written as `\\u003c` etc. so no
text can close the element, and the page puts them into the DOM with `textContent` only.
"""

from __future__ import annotations

import json
import math
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

from paretohqd.io import read_table, write_text
from paretohqd.report.evidence import control_tables
from paretohqd.report.judged import judge_tables
from paretohqd.select.plot import thin

# Selected training samples whose texts are shown per preference and stage (the closest to the
# ray first); the points of all of them are drawn.
SELECTION_TEXTS = 3

# Where each stage's selection reads its rewards and texts (the `select` steps' inputs).
_STAGES = {"stage1": "data/scores.parquet", "stage2": "stage2/scores.parquet"}

_TOKENS = ("@@PLOTLY_JS@@", "@@REPORT_DATA@@")


def write_html(report: dict, runs: list[dict], cloud: pd.DataFrame, path: str | Path, *, title: str) -> Path:
    """Write report.html for a report (`build_report`'s dict and runs) to `path`, atomically.

    Args:
        report: the report dict.
        runs: the loaded runs, in report order.
        cloud: the first run's scored training data (the objective columns are used).
        path: the HTML file to write.
        title: the page title.

    Returns:
        `path`.
    """
    return write_text(render_html(page_data(report, runs, cloud, title=title)), path)


def render_html(data: dict) -> str:
    """The page: the template with Plotly's JavaScript and `data` (as escaped JSON) filled in."""
    from plotly.offline import get_plotlyjs  # a 5 MB string: loaded only when a page is made

    template = files("paretohqd.report").joinpath("page.html").read_text(encoding="utf-8")
    head, rest = template.split(_TOKENS[0])
    middle, tail = rest.split(_TOKENS[1])
    # one pass over the template, so no text in the data can be taken for a token
    return head + get_plotlyjs() + middle + json_for_script(data) + tail


def json_for_script(data) -> str:
    """`data` as JSON that is safe inside a `<script>` element: `<`, `>`, `&` (and the line
    separators JavaScript once disallowed in strings) are written as escapes, which JSON.parse
    reads back unchanged.

    Examples:
        >>> json_for_script({"a": "</script><b>&"})
        '{"a":"\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e\\\\u0026"}'
    """
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def page_data(report: dict, runs: list[dict], cloud: pd.DataFrame, *, title: str) -> dict:
    """Everything the page shows, as plain JSON-able values (NaN -> None).

    Keys: `title`, `objectives`, `box` (lower, upper, reference), `cloud` (source, n, per-objective
    columns of the thinned points), `methods` (per run: its models and base from the report, its
    controllability and change from the base, its prompts, answers as rows [model, prompt index,
    response, collapse, *rewards], and selections per stage and preference: points as
    per-objective columns and a few texts), `tables` (report.md's controllability,
    change-from-base and LLM-judge tables as text: title, note, header, rows).
    """
    names = report["bounds"]["objectives"]
    bounds = report["bounds"]
    points = cloud[names].to_numpy(dtype=np.float64)  # (N, M)
    shown = points[thin(np.arange(len(points)))]  # (n, M)
    decimals = _decimals(bounds["lower"], bounds["upper"])  # (M,)
    methods = []
    for entry, run in zip(report["methods"], runs):
        models = [_model(r, names) for r in entry["models"]]
        methods.append({
            "method": entry["method"], "description": entry["description"], "folder": entry["folder"],
            "hypervolume": entry["hypervolume"], "hypervolume_ci95": entry["hypervolume_ci95"],
            "control": entry.get("control"), "change_vs_base": entry.get("change_vs_base"),
            "models": models, "base": None if entry["base"] is None else _model(entry["base"], names),
            **_answers(run["responses"], names),
            "selections": _selections(run["root"], names, decimals),
        })
    return _clean({
        "title": title, "objectives": names,
        "box": {"lower": bounds["lower"], "upper": bounds["upper"], "reference": report["reference"]["raw"]},
        "cloud": {"source": report["bounds_from"], "n": len(points),
                  "columns": [np.round(shown[:, k], d).tolist() for k, d in enumerate(decimals)]},
        "methods": methods, "tables": control_tables(report) + judge_tables(report),
    })


def _model(row: dict, names: list[str]) -> dict:
    return {"model": row["model"], "preference_index": row["preference_index"], "weights": row["weights"],
            "n": row["n"], "mean": [row["mean"][o] for o in names], "ci95": [row["ci95"][o] for o in names],
            "on_front": row.get("on_front", False), "collapse_rate": row["collapse_rate"]}


def _answers(df: pd.DataFrame, names: list[str]) -> dict:
    """The run's held-out prompts (each once) and every answer as a compact row."""
    prompts = df.drop_duplicates("prompt_id")[["prompt_id", "prompt"]]
    index = {p: i for i, p in enumerate(prompts["prompt_id"])}
    rewards = df[names].to_numpy(dtype=np.float64)  # (R, M)
    rows = [[m, index[p], r, c if isinstance(c, str) else None, *np.round(v, 4).tolist()]
            for m, p, r, c, v in zip(df["model"], df["prompt_id"], df["response"], df["collapse"], rewards)]
    return {"prompts": [{"id": i, "text": t} for i, t in zip(prompts["prompt_id"], prompts["prompt"])],
            "answers": rows}


def _selections(root: Path, names: list[str], decimals: list[int]) -> dict:
    """Per stage with a selection file and its scores: per preference index the selected samples'
    rewards (per-objective columns) and the first `SELECTION_TEXTS` of them with their texts."""
    out = {}
    for stage, scores_file in _STAGES.items():
        sel_path, scores_path = root / stage / "selection.parquet", root / scores_file
        if not (sel_path.exists() and scores_path.exists()):
            continue  # a method without this stage (RiC, soups, MORLHF; stage1-only has no stage 2)
        selection = read_table(sel_path)
        scores = read_table(scores_path)
        text_cols = [c for c in ("prompt", "response") if c in scores.columns]
        joined = selection.merge(scores[["id", *names, *text_cols]], on="id", how="inner", sort=False)
        per_pref = {}
        for i, g in joined.groupby("preference_index", sort=True):
            vals = g[names].to_numpy(dtype=np.float64)  # (k, M)
            per_pref[str(int(i))] = {
                "n": len(g),
                "columns": [np.round(vals[:, k], d).tolist() for k, d in enumerate(decimals)],
                "texts": [{"prompt": t.get("prompt"), "response": t.get("response"),
                           "rewards": [round(float(t[o]), 4) for o in names]}
                          for t in g.head(SELECTION_TEXTS).to_dict("records")],
            }
        out[stage] = {"scores": str(scores_path), "preferences": per_pref}
    return out


def _decimals(lower: list[float], upper: list[float]) -> list[int]:
    """Decimals that keep a thousandth of each objective's box (a pixel on a wide plot); fewer
    digits keep the file small.

    Examples:
        >>> _decimals([-0.9, 0.0], [0.41, 200.0])
        [3, 1]
    """
    return [max(0, 3 - math.floor(math.log10(max(hi - lo, 1e-12)))) for lo, hi in zip(lower, upper)]


def _clean(value):
    """NaN and inf to None, numpy scalars to Python: JSON has neither."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
