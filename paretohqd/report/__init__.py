"""The report of one or more evaluated runs: report.json, report.md, front.png, printed tables."""

from paretohqd.report.run import build_report, write_report

__all__ = ["build_report", "write_report"]
