"""`data.sources` to samples: each entry is an HH path / hub id or a {path, format, columns, split}
mapping, read by its format's reader. Every reader yields, per row, the list of its samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from paretohqd.config import DataConfig, SourceConfig
from paretohqd.data import hh_rlhf, published, readers
from paretohqd.data.rows import Sample, file_rows, hub_rows, is_hub_id, source_name, table_files
from paretohqd.io import InputError

Reader = Callable[[Iterable[tuple[str, dict]], str, dict], Iterator[list[Sample]]]

READERS: dict[str, Reader] = {
    "table": readers.read_table,
    "pairs": readers.read_pairs,
    "pku-saferlhf": published.read_pku_saferlhf,
    "helpsteer2": published.read_helpsteer2,
    "ultrafeedback": published.read_ultrafeedback,
}
"""Every format but `hh` (whose files are transcripts, read by `paretohqd.data.hh_rlhf`)."""


def as_source(source: str | SourceConfig) -> SourceConfig:
    """A `data.sources` entry as a mapping: a bare path or hub id is `format: hh`.

    Examples:
        >>> as_source("data/hh").format
        'hh'
    """
    return source if isinstance(source, SourceConfig) else SourceConfig(path=source)


def on_hub(source: str | SourceConfig) -> bool:
    """Whether the source is read from the hub (an owner/name id that is not a local path)."""
    src = as_source(source)
    if src.format == "hh":  # the HH reader knows one hub id
        return src.path == hh_rlhf.HUB_ID and not Path(src.path).exists()
    return is_hub_id(src.path)


def hh_paths(sources: Sequence[str | SourceConfig]) -> list[str]:
    """The HH-format entries of `sources` (paths or the hub id), or the offline default HH data when
    there are none: what the offline MiniLM heads train on."""
    hh = [as_source(s).path for s in sources if as_source(s).format == "hh"]
    return hh or [str(s) for s in DataConfig().sources]


def describe(source: str | SourceConfig, hub_split: str) -> dict:
    """A source as plain data, local paths absolute: what a scorer trained on it is keyed by."""
    src = as_source(source)
    path = src.path if on_hub(src) else str(Path(src.path).expanduser().resolve())
    split = src.split if src.split is not None else (hub_split if on_hub(src) else None)
    return {"path": path, "format": src.format, "columns": dict(sorted(src.columns.items())), "split": split}


def read_rows(sources: Sequence[str | SourceConfig], hub_split: str = "test") -> Iterator[list[Sample]]:
    """The samples of every source, row by row (a row of HH or `pairs` data gives two).

    Raises:
        InputError: no sources, a missing path, or a bad row (named `file:line` and field).
    """
    if not sources:
        raise InputError("no data sources given (data.sources)")
    for source in sources:
        src = as_source(source)
        if src.format == "hh":
            local_split = src.split is not None and not on_hub(src)
            paths = [str(p) for p in table_files(src.path, src.split)] if local_split else [src.path]
            for pair in hh_rlhf.read_pairs(paths, src.split or hub_split):
                yield [Sample(p, r, pair.source) for p, r in pair.samples()]
            continue
        reader = READERS[src.format]
        if on_hub(src):
            yield from reader(hub_rows(src.path, src.split or hub_split), src.path, src.columns)
            continue
        for path in table_files(src.path, src.split):
            yield from reader(file_rows(path), source_name(path), src.columns)


def first_sample(source: str | SourceConfig, hub_split: str = "test") -> Sample:
    """The first sample of a local source (what `run --check` encodes and reads labels from)."""
    for samples in read_rows([source], hub_split):
        if samples:
            return samples[0]
    raise InputError(f"{as_source(source).path}: no samples in it")
