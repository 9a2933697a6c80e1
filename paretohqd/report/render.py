"""The report as text: report.md, and the tables printed to the terminal."""

from __future__ import annotations

import re

import pandas as pd
from rich.console import Console
from rich.table import Table

from paretohqd.data.transcript import last_turn
from paretohqd.progress import console as default_console
from paretohqd.report.evidence import change_line, control_header, control_rows, control_tables, delta_cell
from paretohqd.report.judged import judge_tables


def box_line(report: dict) -> str:
    """How the hypervolume is measured: the box, its source, and the reference point."""
    b = report["bounds"]
    box = ", ".join(f"{o} [{lo:.4g}, {hi:.4g}]" for o, lo, hi in zip(b["objectives"], b["lower"], b["upper"]))
    ref = ", ".join(f"{x:.4g}" for x in b["lower"])
    zero = ", ".join("0" for _ in b["lower"])
    shared = " (the first run's box, used for every run here)" if len(report["methods"]) > 1 else ""
    return (f"Hypervolume of the mean-reward points in the normalised box{shared}: {box}, from "
            f"{report['bounds_from']} (min/max of the scored training data); reference point = normalised "
            f"nadir ({zero}) = raw ({ref}).")


NORMALISATION_TITLES = {"data": "data box", "zscore": "z-scores", "fronts": "fronts box"}


def _vec(xs: list[float]) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in xs) + ")"


def normalisation_lines(report: dict) -> list[str]:
    """One line per normalisation: how points are normalised, and the reference point in the
    normalised space and in raw rewards."""
    names = report["bounds"]["objectives"]
    out = []
    for name, nz in report["normalisations"].items():
        head = f"**{name}** ({NORMALISATION_TITLES.get(name, name)}): {nz['what']}"
        if "lower" not in nz:
            out.append(f"{head}. Not computed: {nz['unavailable']}.")
            continue
        if name == "zscore":
            scale = ", ".join(f"{o} mean {m:.4g} sd {sd:.4g}" for o, m, sd in zip(names, nz["mean"], nz["std"]))
        else:
            scale = ", ".join(f"{o} [{lo:.4g}, {hi:.4g}]" for o, lo, hi in zip(names, nz["lower"], nz["upper"]))
        src = f", from {nz['from']}" if "from" in nz else f", {nz['points']} model points"
        out.append(f"{head}. {scale}{src}; reference point = normalised {_vec(nz['ref_normalised'])} "
                   f"= raw {_vec(nz['ref_raw'])}.")
    return out


def hv_column(report: dict, name: str) -> str:
    """The header of one normalisation's hypervolume column, with its reference point (raw)."""
    nz = report["normalisations"][name]
    ref = "n/a" if "ref_raw" not in nz else _vec(nz["ref_raw"])
    return f"HV {name}, ref {ref} [95%]"


def norm_cell(h: dict | None) -> str:
    """One normalisation's hypervolume with its interval; "-" where it was not computed."""
    if h is None:
        return "-"
    ci = h["ci95"]
    return f"{h['hypervolume']:.4f}" if ci is None else f"{h['hypervolume']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"


def norm_delta_cell(h: dict | None) -> str:
    """One normalisation's difference to the first method with its paired interval, or "-"."""
    return "-" if h is None else hv_delta_cell({"hypervolume_vs_first": h["vs_first"]})


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def normalisation_header(report: dict) -> list[str]:
    cols = ["method"]
    for name in report["normalisations"]:
        cols += [hv_column(report, name), f"{name}: vs first [95%]"]
    return cols + ["spacing (data box)", "sparsity (data box)"]


def normalisation_rows(report: dict) -> list[list[str]]:
    """Per method: each normalisation's hypervolume [95%] and difference to the first method, and
    the front's spacing and sparsity in the data box; base models (one point, no spread) after."""
    norms = list(report["normalisations"])
    rows = []
    for m in report["methods"]:
        hv = m["hypervolumes"]
        data = hv.get("data") or {}
        cells = [c for n in norms for c in (norm_cell(hv[n]), norm_delta_cell(hv[n]))]
        rows.append([m["method"], *cells, _num(data.get("spacing")), _num(data.get("sparsity"))])
    for m in report["methods"]:
        if m["base"] is not None:
            hv = m["base"]["hypervolumes"]
            rows.append([f"{m['method']}: base", *[c for n in norms for c in (_num(hv[n]), "-")], "-", "-"])
    return rows


def main_rows(report: dict) -> list[list[str]]:
    """method, description, hypervolume, collapse rate, compute hours; base models after the methods."""
    rows = []
    for m in report["methods"]:
        c = m["compute"]["training"]
        rows.append([m["method"], m["description"], hv_cell(m), hv_delta_cell(m), f"{m['collapse_rate']:.1%}",
                     f"{c['device_h']:.3f}", f"{c['wall_h']:.3f}"])
    for m in report["methods"]:
        if m["base"] is not None:
            b = m["base"]
            rows.append([f"{m['method']}: base", "untuned policy (reference)", f"{b['hypervolume']:.4f}", "-",
                         f"{b['collapse_rate']:.1%}", "0", "0"])
    return rows


MAIN_HEADER = ["method", "what", "hypervolume [95%]", "vs first [95%]", "collapse rate", "compute (device h)",
               "compute (wall h)"]


def hv_cell(m: dict) -> str:
    """Hypervolume with its prompt-bootstrap interval."""
    ci = m.get("hypervolume_ci95")
    return f"{m['hypervolume']:.4f}" if ci is None else f"{m['hypervolume']:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"


def hv_delta_cell(m: dict) -> str:
    """Hypervolume minus the first method's, with its paired interval; "-" for the first method."""
    return delta_cell(m.get("hypervolume_vs_first"))


def preference_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and one row per model: weights, mean reward [95% interval] per objective, collapse, front."""
    names = report["bounds"]["objectives"]
    header = ["method", "model", "weights", *names, "collapse", "on front"]
    rows = []
    for m in report["methods"]:
        for r in m["models"] + ([m["base"]] if m["base"] is not None else []):
            w = "-" if r["weights"] is None else "(" + ", ".join(f"{x:.2g}" for x in r["weights"]) + ")"
            cells = [_mean_ci(r["mean"][o], r["ci95"][o]) for o in names]
            front = "-" if "on_front" not in r else ("yes" if r["on_front"] else "no")
            rows.append([m["method"], r["model"], w, *cells, f"{r['collapse_rate']:.1%}", front])
    return header, rows


def _mean_ci(mean: float, ci: list) -> str:
    return f"{mean:.3f}" if ci[0] is None else f"{mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731 - a pipe would split the cell
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fenced(text: str, limit: int = 600) -> str:
    """A model's answer as it is, in a code fence: no markdown or HTML in it renders (the fence is
    longer than any run of backticks in the answer, so none closes it).

    Examples:
        >>> print(_fenced("<b>hi</b> ```"))
        ````text
        <b>hi</b> ```
        ````
    """
    text = text if len(text) <= limit else text[:limit] + " [...]"
    fence = "`" * max(3, 1 + max(map(len, re.findall(r"`+", text)), default=0))
    return f"{fence}text\n{text or '(empty)'}\n{fence}"


def _plain(text: str) -> str:
    r"""Text (a prompt) on one markdown line, every markdown or HTML character escaped.

    Examples:
        >>> print(_plain("# <i>a</i>\n*b*"))
        \# \<i\>a\<\/i\> \*b\*
    """
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", " ".join(text.split()))


def samples_md(report: dict, samples: dict[str, pd.DataFrame]) -> list[str]:
    """A few answers per model, the same prompts for every model so they compare side by side."""
    names = report["bounds"]["objectives"]
    out = ["## Sample responses", ""]
    for m in report["methods"]:
        df = samples.get(m["method"])
        if df is None or df.empty:
            continue
        for model, g in df.groupby("model", sort=False):
            w = g["weights"].iloc[0]
            weights = "" if w is None else " · weights (" + ", ".join(f"{x:.2g}" for x in w) + ")"
            out += [f"### {m['method']} · {model}{weights}", ""]
            for _, row in g.iterrows():
                scores = ", ".join(f"{o} {row[o]:.3f}" for o in names)
                # a row Series turns a null reason into NaN, so test with notna, not `is None`
                flag = f"; collapse: **{row['collapse']}**" if pd.notna(row["collapse"]) else ""
                out += [f"**Prompt** ({row['prompt_id']}): {_plain(last_turn(row['prompt'])[:300])}", "",
                        _fenced(row["response"]), "", f"*{scores}{flag}*", ""]
    return out


def protocol_line(p: dict) -> str:
    """The protocol choices of a run, in words (README, "Reproducing the paper").

    Examples:
        >>> protocol_line({"prompt_format": "hh", "select_nadir": "data", "evaluate_source": "split",
        ...     "evaluate_sources": ["Anthropic/hh-rlhf"], "stage2_prompts_per": "model", "top_k": 0,
        ...     "top_p": 0.9, "temperature": 1.0, "stop": []})
        'prompt format hh; r_min = data minimum; evaluation prompts from a separate split (Anthropic/hh-rlhf); stage-2 prompts per model; sampling temperature 1.0, top_p 0.9, top_k off'
    """
    source = ("held out of the training data" if p["evaluate_source"] == "heldout"
              else f"from a separate split ({', '.join(p['evaluate_sources'] or [])})")
    stop = f", stop at {p['stop']}" if p["stop"] else ""
    return (f"prompt format {p['prompt_format']}; r_min = {p['select_nadir']} minimum; evaluation prompts {source}; "
            f"stage-2 prompts per {p['stage2_prompts_per']}; sampling temperature {p['temperature']}, "
            f"top_p {p['top_p']}, top_k {p['top_k'] or 'off'}{stop}")


def interpolation_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """Leave-one-out interpolation quality (`paretohqd evaluate RUN --interpolation`) of every
    method that has it: the trained model's mean reward, the mix's, their paired difference with
    its interval, and the spread between the mix's neighbours for scale."""
    names = report["bounds"]["objectives"]
    header = ["method", "left out", "mixed from", *[f"{o}: trained / mixed" for o in names],
              *[f"{o}: mixed - trained [95%]" for o in names], *[f"{o}: neighbours' spread" for o in names]]
    rows = []
    for m in report["methods"]:
        for row in (m.get("interpolation") or {}).get("rows", []):
            parts = ", ".join(f"{k} x {lam:.3g}" for k, lam in row["mixed_from"].items())
            rows.append([m["method"], f"{row['left_out']} ({', '.join(f'{x:g}' for x in row['weights'])})", parts,
                         *[f"{row['trained'][o]:.4f} / {row['mixed'][o]:.4f}" for o in names],
                         *[_mean_ci(row["difference"][o], row["ci95"][o]) for o in names],
                         *[f"{row['neighbour_spread'][o]:.4f}" for o in names]])
    return header, rows


def interpolation_md(report: dict) -> list[str]:
    """The report's interpolation section, or nothing when no method was measured."""
    header, rows = interpolation_rows(report)
    if not rows:
        return []
    n = next(m["interpolation"]["prompts"] for m in report["methods"] if m.get("interpolation"))
    return ["## Interpolation quality", "",
            "Each trained preference that others surround, left out and rebuilt from its neighbours "
            "(theta = W + sum lambda dW, what `paretohqd.load` and `serve` give for a preference off the grid), "
            f"answering the same {n} held-out prompts with the same seed. `mixed - trained`: the paired mean "
            "difference with its bootstrap interval; an interval that holds 0 is no evidence of a difference. "
            "The neighbours' spread (max - min of their mean rewards) is the scale to read it against.", "",
            md_table(header, rows), ""]


def control_md(report: dict) -> list[str]:
    """The report's controllability and change-from-base sections (`control_tables`), and the LLM
    judge's win rates where a run was judged (`judge_tables`)."""
    return [line for t in control_tables(report) + judge_tables(report)
            for line in (f"## {t['title']}", "", t["note"], "", md_table(t["header"], t["rows"]), "")]


def report_md(report: dict, samples: dict[str, pd.DataFrame], png: str) -> str:
    """The whole markdown report."""
    names = report["bounds"]["objectives"]
    lines = [f"# ParetoHqD report: {', '.join(m['method'] for m in report['methods'])}", "",
             box_line(report), ""]
    for m in report["methods"]:
        d = m["disjointness"]
        files = ", ".join(f"{f} ({n:,} prompts)" for f, n in d["training_prompts"].items())
        what = f"prompts of {d['prompts_file']}" if d.get("prompts_file") else "held-out prompts"
        lines += [f"- **{m['method']}**: {m['prompts']} {what}; checked disjoint by prompt hash from "
                  f"{files}: {d['overlap']} overlap. Bootstrap: {m['bootstrap']['resamples']} resamples, "
                  f"seed {m['bootstrap']['seed']}, {m['bootstrap']['level']:.0%} percentile intervals."]
        if m.get("protocol"):
            lines.append(f"  Protocol: {protocol_line(m['protocol'])}.")
    lines += ["", "## Hypervolume under three normalisations", "",
              "The same mean-reward points measured three ways; each column's header gives its reference point "
              "in raw rewards (normalised below). A point that does not dominate the reference in every "
              "objective adds nothing. Intervals and `vs first` as in the main table.", ""]
    lines += [f"- {line}" for line in normalisation_lines(report)]
    lines += ["", md_table(normalisation_header(report), normalisation_rows(report)), "",
              "Spacing (Schott): the spread of each point's L1 distance to its nearest neighbour on the front, "
              "0 = evenly spaced. Sparsity (PGMORL): the mean squared gap between neighbours along each "
              "objective, lower = denser. Both over the method's Pareto-optimal models, normalised by the data "
              "box (report.json has them per normalisation); '-' for fewer than 2 models on the front."]
    lines += ["", "## Main table", "",
              "Hypervolume intervals: percentile bootstrap over the held-out prompts, one draw for all of a "
              "method's models; `vs first`: hypervolume minus the first method's, with a paired interval (the "
              "same draws for both). An interval that holds 0 is no evidence either way. Compute: every step "
              "of the run before evaluate (from manifest.json); device hours = wall hours x devices.", "",
              md_table(MAIN_HEADER, main_rows(report)), ""]
    lines += control_md(report)
    header, rows = preference_rows(report)
    lines += ["## Per preference", "", f"Mean reward per objective ({', '.join(names)}) with its 95% "
              "bootstrap interval; on front = no other model of the method has higher means everywhere.", "",
              md_table(header, rows), "", "## Front", "", f"![front]({png})", "", "## Compute by stage", ""]
    stage_rows = [[m["method"], s, f"{v['wall_h']:.4f}", f"{v['device_h']:.4f}", str(v["steps"])]
                  for m in report["methods"] for s, v in m["compute"]["stages"].items()]
    lines += [md_table(["method", "stage", "wall h", "device h", "steps"], stage_rows), ""]
    lines += interpolation_md(report)
    return "\n".join(lines + samples_md(report, samples))


def print_tables(report: dict, console: Console | None = None) -> None:
    """The main table and the per-preference table, on the terminal."""
    console = console or default_console
    table = Table(title="ParetoHqD evaluation", caption=box_line(report), caption_justify="left")
    for col in MAIN_HEADER:
        table.add_column(col, justify="left" if col in ("method", "what") else "right")
    for row in main_rows(report):
        table.add_row(*row)
    console.print(table)
    table = Table(title="hypervolume under three normalisations (header: reference point, raw)",
                  caption="\n".join(normalisation_lines(report)), caption_justify="left")
    for col in normalisation_header(report):  # fold, not cut: the header carries the reference point
        table.add_column(col, justify="left" if col == "method" else "right", overflow="fold")
    for row in normalisation_rows(report):
        table.add_row(*row)
    console.print(table)
    header, rows = preference_rows(report)
    table = Table(title="per preference: mean reward [95% interval]")
    for col in header:
        table.add_column(col, justify="left" if col in ("method", "model", "weights") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    header, rows = interpolation_rows(report)
    if rows:  # the differences only (report.md has the means): the table must fit a terminal
        keep = [i for i, col in enumerate(header) if col != "method" and "trained /" not in col]
        table = Table(title="interpolation quality: each left-out preference's mix of neighbours minus its trained model")
        for i in keep:
            table.add_column(header[i], justify="left" if i < 3 else "right", overflow="fold")
        for row in rows:
            table.add_row(*[row[i] for i in keep])
        console.print(table)
    table = Table(title="controllability in the fronts box (report.md explains each column)")
    header = control_header()
    keep = [i for i, col in enumerate(header) if len(report["methods"]) > 1 or "vs first" not in col]  # fit a terminal
    for i in keep:
        table.add_column(header[i], justify="left" if i == 0 else "right", overflow="fold")
    for row in control_rows(report):
        table.add_row(*[row[i] for i in keep])
    console.print(table)
    for t in judge_tables(report):
        table = Table(title=t["title"])
        for i, col in enumerate(t["header"]):
            table.add_column(col, justify="left" if i < 3 else "right", overflow="fold")
        for row in t["rows"]:
            table.add_row(*row)
        console.print(table)
    for m in report["methods"]:  # last, so the run's closing lines say what tuning did to each objective
        console.print(change_line(m, report["bounds"]["objectives"]))
