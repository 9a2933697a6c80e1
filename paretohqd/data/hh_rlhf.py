"""Reading Anthropic HH-RLHF transcripts: files, folders or the hub, into (prompt, response) pairs.

A transcript is "\\n\\nHuman: ...\\n\\nAssistant: ..." turns. It splits at the last
"\\n\\nAssistant:" into the prompt (the whole dialogue before it, every turn kept) and the
response. The prompt is kept both as HH text (what HH reward models were trained on) and as chat
messages (so any chat template applies).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from paretohqd.data.rows import file_rows
from paretohqd.io import InputError

ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
_HUMAN = re.compile(r"\n\nHuman:[ ]?")
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


def split_transcript(text: str) -> tuple[str, str]:
    """Split at the last "\\n\\nAssistant:" into (prompt, response).

    The prompt keeps its trailing "\\n\\nAssistant:" off; the response is stripped.

    Examples:
        >>> split_transcript("\\n\\nHuman: Hi\\n\\nAssistant: Hello!\\n\\nHuman: Joke?\\n\\nAssistant: No.")
        ('\\n\\nHuman: Hi\\n\\nAssistant: Hello!\\n\\nHuman: Joke?', 'No.')

    Raises:
        ValueError: the transcript has no Assistant turn.
    """
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        raise ValueError('no "Assistant:" turn')
    return text[:cut], text[cut + len(ASSISTANT) :].strip()


def to_messages(prompt: str) -> list[dict[str, str]]:
    """HH dialogue text to chat messages [{"role": "user"|"assistant", "content": ...}].

    Examples:
        >>> to_messages("\\n\\nHuman: Hi\\n\\nAssistant: Hello!\\n\\nHuman: Joke?")
        [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}, {'role': 'user', 'content': 'Joke?'}]
    """
    parts = _TURN.split(prompt)
    # parts: [preamble, role, text, role, text, ...]; the preamble is empty in well-formed rows
    messages = []
    for role, content in zip(parts[1::2], parts[2::2]):
        role = "user" if role == "Human" else "assistant"
        content = content.strip()
        if messages and messages[-1]["role"] == role:  # a few rows repeat a speaker: merge
            messages[-1]["content"] += "\n\n" + content
        else:
            messages.append({"role": role, "content": content})
    if parts[0].strip():
        messages.insert(0, {"role": "user", "content": parts[0].strip()})
    return messages


def last_turn(prompt: str) -> str:
    """The last Human turn of an HH dialogue: what the response answers.

    MiniLM reads 256 tokens at most, and truncation would keep a long dialogue's *first* turns;
    the last question is what decides whether an answer helps or harms (and it is ~5x shorter).

    Examples:
        >>> last_turn("\\n\\nHuman: Hi\\n\\nAssistant: Hello!\\n\\nHuman: Tell me a joke?")
        'Tell me a joke?'
    """
    turns = _HUMAN.split(prompt)
    return turns[-1].split(ASSISTANT)[0].strip()


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


def _read_hub(split: str) -> Iterator[Pair]:
    from datasets import load_dataset  # only when online

    ds = load_dataset(HUB_ID, split=split)
    for i, row in enumerate(ds):
        yield _parse_row(row, "hh-rlhf", f"{HUB_ID}[{split}]:{i}")


def read_pairs(sources: list[str], hub_split: str = "test") -> Iterator[Pair]:
    """Pairs from every source: files, folders (recursively), or the hub id `Anthropic/hh-rlhf`."""
    if not sources:
        raise InputError("no data sources given")
    for source in sources:
        if source == HUB_ID and not Path(source).exists():
            yield from _read_hub(hub_split)
        else:
            for path in _files(source):
                yield from read_file(path)
