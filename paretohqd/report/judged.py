"""The LLM judge's win rates (`paretohqd judge RUN`, RUN/judge/*.json) as report tables: one per
method, reference and judge, each {title, note, header, rows} as report.md, the terminal and
report.html show them."""

from __future__ import annotations

JUDGE_HEADER = ["model", "weights", "judged on", "win [95%]", "tie [95%]", "loss [95%]", "score [95%]",
                "prompts", "invalid", "orders agree"]


def _rate(r: dict) -> str:
    ci = r["ci95"]
    return f"{r['rate']:.2f}" + ("" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]")


def _rows(summary: dict) -> list[list[str]]:
    rows = []
    for m in summary["models"]:
        weights = ", ".join(f"{w:g}" for w in m["weights"])
        for aspect, a in m["aspects"].items():
            rates = a["rates"] or {}
            cells = [_rate(rates[k]) if k in rates else "-" for k in ("win", "tie", "loss", "score")]
            agree = "-" if a["consistent"] is None else f"{a['consistent']:.0%}"
            rows.append([m["model"], weights, aspect, *cells, str(a["prompts"]), str(a["invalid"]), agree])
    return rows


def _usage(u: dict) -> str:
    cost = "" if u["cost"] is None else (f"; cost {u['cost']:.4g} at {u['prices_per_million']['in']:g} / "
                                         f"{u['prices_per_million']['out']:g} per million prompt / completion tokens")
    return (f"{u['verdicts']:,} verdicts from {u['requests_all']:,} requests ({u['invalid']} invalid), "
            f"{u['tokens']['prompt']:,} prompt and {u['tokens']['completion']:,} completion tokens{cost}")


def judge_tables(report: dict) -> list[dict]:
    """Every method's judge summaries as tables; none when no run was judged."""
    tables = []
    for method in report["methods"]:
        for s in method.get("judge") or []:
            note = (f"Judge {s['judge']} ({s['endpoint']}) compared each preference model's answer with "
                    f"{s['against']}'s on the same {s['prompts']} evaluation prompts, asked in both orders: a verdict "
                    "that flips with the order is a tie, a win (loss) in one order and a tie in the other a win "
                    "(loss). `judged on`: `preference` states the model's weights over every objective's "
                    "criterion, an objective's name asks about it alone. score = win + tie / 2; intervals: "
                    f"percentile bootstrap over prompts ({s['bootstrap']['resamples']} resamples); invalid "
                    "prompts (no verdict in an order after a second ask) are left out of the rates. "
                    f"{_usage(s['usage'])}.")
            tables.append({"title": f"LLM judge: {method['method']} vs {s['against']} ({s['judge']})",
                           "note": note, "header": JUDGE_HEADER, "rows": _rows(s)})
    return tables
