"""Weight vectors from a file, for `paretohqd select --preferences FILE` (the numeric checks stay in
`paretohqd.pareto.preferences`, which reads no file)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def read_preferences(path: str | Path) -> list[list[float]]:
    """Weight vectors from a file, for `--preferences FILE`.

    Accepted: YAML or JSON (a list of lists, or a mapping with a `preferences` list), or CSV
    (one weight vector per row; a header row of names is skipped). Values are checked later, by
    `check_preferences`, once the number of objectives is known.

    Args:
        path: a .yaml/.yml/.json/.csv/.txt file.

    Returns:
        The rows as lists of floats.

    Raises:
        ValueError: unreadable file, or content that is not a list of numeric rows.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{path}: cannot read preferences file: {e.strerror or e}") from None
    if path.suffix.lower() in (".csv", ".txt"):
        return _rows_from_csv(text, path)
    try:
        data = yaml.safe_load(text)  # JSON is YAML, so one parser reads both
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid YAML/JSON: {e}") from None
    if isinstance(data, dict) and "preferences" in data:
        data = data["preferences"]
    if not isinstance(data, list) or not all(isinstance(r, list) for r in data) or not data:
        raise ValueError(f"{path}: expected a list of weight vectors such as [[0.3, 0.7], [0.5, 0.5]]")
    try:
        return [[float(x) for x in row] for row in data]
    except (TypeError, ValueError):
        raise ValueError(f"{path}: every weight must be a number") from None


def _rows_from_csv(text: str, path: Path) -> list[list[float]]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    rows = []
    for n, line in enumerate(lines):
        cells = [c.strip() for c in line.split(",")]
        try:
            rows.append([float(c) for c in cells])
        except ValueError:
            if n == 0:  # a header of objective names
                continue
            raise ValueError(f"{path}: row {n + 1} {line!r} is not a list of numbers") from None
    if not rows:
        raise ValueError(f"{path}: no weight vectors found")
    return rows
