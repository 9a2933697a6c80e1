"""Reading Anthropic HH-RLHF transcripts: files, folders or the hub, into (prompt, response) pairs
(`transcript.py` splits a transcript and turns a prompt into chat messages)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from paretohqd.data.rows import file_rows
from paretohqd.data.transcript import split_transcript
from paretohqd.io import InputError

HUB_ID = "Anthropic/hh-rlhf"


@dataclass(frozen=True)
class Pair:
    """One HH row: the prompt and its chosen and rejected responses."""

    prompt: str
    chosen: str
    rejected: str
    source: str  # subset name, e.g. "helpful-base"
    where: str  # "file:line", for error messages
    rejected_prompt: str  # == prompt, except in the few rows whose two transcripts diverge earlier

    def samples(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """(prompt, response) for the chosen and the rejected answer."""
        return (self.prompt, self.chosen), (self.rejected_prompt, self.rejected)


def _source_name(path: Path) -> str:
    name = path.name
    for ext in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(ext)
    # the hub layout is <subset>/test.jsonl.gz: name the subset, not the split
    return path.parent.name if name in ("train", "test") else name


def _parse_row(row: object, source: str, where: str) -> Pair:
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object with 'chosen' and 'rejected'")
    texts = {}
    for field in ("chosen", "rejected"):
        if field not in row:
            raise InputError(f"{where}: missing field '{field}'")
        if not isinstance(row[field], str):
            raise InputError(f"{where}: field '{field}' must be a string, got {type(row[field]).__name__}")
        try:
            texts[field] = split_transcript(row[field])
        except ValueError as e:
            raise InputError(f"{where}: field '{field}': {e}") from None
    (prompt, chosen), (prompt_r, rejected) = texts["chosen"], texts["rejected"]
    # 14 of the 4,666 test rows have transcripts that diverge before the last answer: each keeps its own
    return Pair(prompt, chosen, rejected, source, where, prompt_r)


def read_file(path: Path) -> Iterator[Pair]:
    """Pairs from one `.jsonl` / `.jsonl.gz` file, errors naming the line and field."""
    source = _source_name(path)
    for where, row in file_rows(path):
        yield _parse_row(row, source, where)


def _files(source: str) -> list[Path]:
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.name.endswith((".jsonl", ".jsonl.gz")))
        if not files:
            raise InputError(f"{path}: folder holds no .jsonl or .jsonl.gz files")
        return files
    if path.is_file():
        return [path]
    raise InputError(f"{source}: no such file or folder (and not the hub id {HUB_ID!r})")


HUB_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
"""The hub dataset's data folders of (chosen, rejected) pairs, read one by one so that every pair keeps
its subset as its source (what `modpo.subsets` labels by): its default configuration reads the four as
one unnamed set. (Its fifth folder, red-team-attempts, holds transcripts without pairs.)"""


def _read_hub(split: str) -> Iterator[Pair]:
    from datasets import load_dataset  # only when online

    for subset in HUB_SUBSETS:
        ds = load_dataset(HUB_ID, data_dir=subset, split=split)
        for i, row in enumerate(ds):
            yield _parse_row(row, subset, f"{HUB_ID}/{subset}[{split}]:{i}")


def read_pairs(sources: list[str], hub_split: str = "test") -> Iterator[Pair]:
    """Pairs from every source: files, folders (recursively), or the hub id `Anthropic/hh-rlhf` (its
    subsets in `HUB_SUBSETS` order, each pair named by its subset)."""
    if not sources:
        raise InputError("no data sources given")
    for source in sources:
        if source == HUB_ID and not Path(source).exists():
            yield from _read_hub(hub_split)
        else:
            for path in _files(source):
                yield from read_file(path)
