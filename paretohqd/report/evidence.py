"""Differences and controllability as text: an interval that holds 0 is printed as no evidence
(`NO_EVIDENCE`), and a change from the base model as up or down."""

from __future__ import annotations


NO_EVIDENCE = "no evidence"
"""Printed after a difference whose interval holds 0: it could be either sign."""


def holds_zero(ci: list[float] | None) -> bool:
    """Whether a difference's interval holds 0 (no evidence either way); False without one.

    Examples:
        >>> holds_zero([-0.1, 0.2]), holds_zero([0.0, 0.0]), holds_zero([0.1, 0.2]), holds_zero(None)
        (True, True, False, False)
    """
    return ci is not None and ci[0] <= 0 <= ci[1]


def delta_cell(d: dict | None, digits: int = 4) -> str:
    """A difference with its paired interval, "no evidence" where that holds 0; "-" for none.

    Examples:
        >>> delta_cell({"delta": 0.5, "ci95": [-0.1, 0.9]}, 2)
        '+0.50 [-0.10, +0.90] no evidence'
        >>> delta_cell({"delta": -2.0, "ci95": [-3.0, -1.0]}, 1), delta_cell(None)
        ('-2.0 [-3.0, -1.0]', '-')
    """
    if d is None:
        return "-"
    cell = _signed(d["delta"], digits)
    if d["ci95"] is None:
        return cell
    lo, hi = d["ci95"]
    return f"{cell} [{_signed(lo, digits)}, {_signed(hi, digits)}]" + (f" {NO_EVIDENCE}" if holds_zero(d["ci95"]) else "")


def _signed(x: float, digits: int) -> str:
    return f"{round(x, digits) + 0.0:+.{digits}f}"  # + 0.0: a round-off -1e-17 prints +0.000, not -0.000


CONTROL_TITLES = {"calibration_deg": "calibration (deg)", "calibration_from_base_deg": "calibration from base (deg)",
                  "order_tau": "order tau", "largest_hole": "largest hole", "reach": "reach", "igd_plus": "IGD+",
                  "epsilon_additive": "epsilon+"}
"""Column titles of the controllability table, by `report.indicators.INDICATORS` key."""
DIGITS = {"calibration_deg": 1, "calibration_from_base_deg": 1, "order_tau": 3, "largest_hole": 3, "reach": 3,
          "igd_plus": 3, "epsilon_additive": 3}
"""Decimals each indicator is printed with (degrees to a tenth; the rest are in [-1, 1] or box units)."""


def control_header() -> list[str]:
    cols = ["method"]
    for title in CONTROL_TITLES.values():
        cols += [f"{title} [95%]", f"{title}: vs first [95%]"]
    return cols


def control_rows(report: dict) -> list[list[str]]:
    """Per method: each controllability indicator [95%] and its paired difference to the first."""
    rows = []
    for m in report["methods"]:
        c = m.get("control")
        if c is None:
            rows.append([m["method"], *["-"] * (2 * len(CONTROL_TITLES))])
            continue
        cells = [cell for key in CONTROL_TITLES
                 for cell in (value_cell(c[key], DIGITS[key]), delta_cell(c[key]["vs_first"], DIGITS[key]))]
        rows.append([m["method"], *cells])
    return rows


def value_cell(v: dict | None, digits: int) -> str:
    """An indicator's value [95% interval]; "-" where it is undefined.

    Examples:
        >>> value_cell({"value": 12.34, "ci95": [10.0, 15.0], "vs_first": None}, 1), value_cell(None, 3)
        ('12.3 [10.0, 15.0]', '-')
    """
    if v is None or v["value"] is None:
        return "-"
    ci = v["ci95"]
    return f"{v['value']:.{digits}f}" + ("" if ci is None else f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]")


def change_header(report: dict) -> list[str]:
    return ["method", *[f"{o}: change vs base [95%]" for o in report["bounds"]["objectives"]]]


def change_rows(report: dict) -> list[list[str]]:
    """Per method and objective: its preference models' mean minus the base model's, up / down /
    no evidence."""
    rows = []
    for m in report["methods"]:
        ch = m.get("change_vs_base")
        rows.append([m["method"], *(["-"] * len(report["bounds"]["objectives"]) if ch is None else
                                    [_change_cell(ch[o]) for o in report["bounds"]["objectives"]])])
    return rows


def _change_cell(d: dict) -> str:
    """"up"/"down" and the change with its interval, or the change and "no evidence"."""
    cell = delta_cell(d, 3)
    if d["ci95"] is None or holds_zero(d["ci95"]):
        return cell
    return ("up " if d["delta"] > 0 else "down ") + cell


def change_line(m: dict, names: list[str]) -> str:
    """One line: per objective, whether the method's models went up or down against its base.

    Examples:
        >>> change_line({"method": "demo", "change_vs_base": {"a": {"delta": 0.2, "ci95": [0.1, 0.3]},
        ...     "b": {"delta": -0.1, "ci95": [-0.3, 0.1]}}}, ["a", "b"])
        'demo vs its base model (mean over its preference models): a up +0.200 [+0.100, +0.300]; b -0.100 [-0.300, +0.100] no evidence'
    """
    ch = m.get("change_vs_base")
    if ch is None:
        return f"{m['method']}: no base model answers on the same prompts to compare with"
    return (f"{m['method']} vs its base model (mean over its preference models): "
            + "; ".join(f"{o} {_change_cell(ch[o])}" for o in names))


def control_tables(report: dict) -> list[dict]:
    """The controllability and change-from-base tables with their titles and notes, as report.md
    and report.html show them: each {title, note, header, rows}."""
    box = report["normalisations"].get("fronts", {})
    names = report["bounds"]["objectives"]
    where = ("the fronts box: " + ", ".join(f"{o} [{lo:.4g}, {hi:.4g}]" for o, lo, hi in zip(names, box["lower"], box["upper"]))
             if "lower" in box else f"the fronts box, which is flat here ({box.get('unavailable')}): not computed")
    control = (
        f"Measured in {where} (min-max over every model's mean point in this report, base models included; "
        "in the training data's box small-budget models all look alike). `calibration`: the mean angle between "
        "each preference's ray (from the box's ideal point toward W = lower + w (upper - lower), ParetoHqD's "
        "direction) and the direction from the ideal point to the model's mean; 0 = every model on its ray. "
        "`calibration from base`: the same angle with the base model's mean as the origin (the direction of "
        "each model's change). `order tau`: Kendall's tau-b between each objective's weight and its mean over "
        "the preferences, averaged over objectives (report.json has each objective's; for 2 objectives they "
        "agree on a front); 1 = more weight always bought more. `largest hole`: the "
        "longest normalised step between neighbouring preferences' means (a stretch of front no preference "
        "reaches). `reach`: the longest normalised distance between any two preferences' means (how much of "
        "the trade-off they span: models that all answer alike have a small hole and a small reach). "
        "`IGD+` / `epsilon+`: average / worst normalised shortfall from the nondominated union of "
        "every model here. Lower is better for all but tau and reach. Intervals: the hypervolume's prompt bootstrap; "
        f"`vs first`: paired difference to the first method; '{NO_EVIDENCE}': the interval holds 0.")
    change = ("Per objective, the mean over a method's preference models minus its base model's mean, on the same "
              "held-out prompts (raw rewards), with a paired bootstrap interval (the same prompt draws for both): "
              f"up / down, or '{NO_EVIDENCE}' where the interval holds 0.")
    return [{"title": "Controllability and distance to the best front", "note": control,
             "header": control_header(), "rows": control_rows(report)},
            {"title": "Change from the base model", "note": change, "header": change_header(report),
             "rows": change_rows(report)}]
