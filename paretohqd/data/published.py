"""Readers for the published schemas of the multi-attribute datasets the field uses.

Each follows its dataset card (the fields below are what the readers require; checked against the
cards' text, not against the real files, which are not reachable from the test machine):

- **PKU-SafeRLHF** (`PKU-Alignment/PKU-SafeRLHF`, and its -10K / -30K subsets): one row per pair,
  `prompt`, `response_0`, `response_1`, `is_response_0_safe`, `is_response_1_safe`,
  `better_response_id`, `safer_response_id` (0/1); the 2024 release adds
  `response_{i}_severity_level`, `response_{i}_source` and `prompt_source`, kept when present.
- **HelpSteer2** (`nvidia/HelpSteer2`): one row per response, `prompt`, `response`, and five 0-4
  integer ratings `helpfulness`, `correctness`, `coherence`, `complexity`, `verbosity`.
  Multi-turn prompts hold earlier turns after `\\n<extra_id_1>Assistant\\n` /
  `\\n<extra_id_1>User\\n` markers (the card's format), split here into chat turns.
- **UltraFeedback** (`openbmb/UltraFeedback`): one row per instruction, `instruction` and
  `completions`, a list of {`response`, `model`, `annotations`: {aspect: {`Rating`: "1".."5"
  or "N/A", ...}} for the four aspects, `overall_score`, `fine-grained_score`}.

Every sample keeps its dataset's labels as columns (named below); `pair_id` and `response_id`
name the row and the answer's place in it, which `reward train --from-pairs` reads.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

from paretohqd.data.rows import Sample, flag, hh_prompt, label_value, missing, number, text
from paretohqd.io import InputError

HELPSTEER2_RATINGS = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
ULTRAFEEDBACK_ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")
_HELPSTEER_TURN = re.compile(r"\n?<extra_id_1>(User|Assistant)\n?")


def read_pku_saferlhf(rows: Iterable[tuple[str, dict]], name: str, columns: dict[str, str]) -> Iterator[list[Sample]]:
    """Both answers of each pair, labelled `better`, `safer` (1.0 for the preferred answer of the
    pair, 0.0 for the other), `is_safe` (1.0 / 0.0), `better_response_id`, `safer_response_id`,
    `pair_id`, `response_id`, and `severity_level`, `response_source`, `prompt_source` when given.

    Raises:
        InputError: a missing or mistyped field, named `file:line` and field.
    """
    for where, row in rows:
        prompt = text(row, "prompt", where).strip()
        better = int(number(row, "better_response_id", where, lo=0, hi=1, whole=True))
        safer = int(number(row, "safer_response_id", where, lo=0, hi=1, whole=True))
        samples = []
        for i in (0, 1):
            response = text(row, f"response_{i}", where).strip()
            labels = {"better": float(better == i), "safer": float(safer == i),
                      "is_safe": float(flag(row, f"is_response_{i}_safe", where)),
                      "better_response_id": better, "safer_response_id": safer, "pair_id": where, "response_id": i}
            for ours, theirs in (("severity_level", f"response_{i}_severity_level"),
                                 ("response_source", f"response_{i}_source"), ("prompt_source", "prompt_source")):
                if theirs in row:
                    labels[ours] = label_value(row[theirs])
            samples.append(Sample(hh_prompt([{"role": "user", "content": prompt}]), response, name, None, labels))
        yield samples


def helpsteer2_messages(prompt: str) -> list[dict]:
    """A HelpSteer2 prompt as chat turns: the first user turn, then each `<extra_id_1>` turn.

    Examples:
        >>> helpsteer2_messages("Hi\\n<extra_id_1>Assistant\\nHello!\\n<extra_id_1>User\\nA joke?")
        [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}, {'role': 'user', 'content': 'A joke?'}]
    """
    parts = _HELPSTEER_TURN.split(prompt)
    # parts: [first user turn, role, text, role, text, ...]
    messages = [{"role": "user", "content": parts[0].strip()}]
    for role, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": role.lower(), "content": content.strip()})
    return messages


def read_helpsteer2(rows: Iterable[tuple[str, dict]], name: str, columns: dict[str, str]) -> Iterator[list[Sample]]:
    """One sample per row, labelled with its five 0-4 ratings (integers).

    Raises:
        InputError: a missing field, a rating that is not an integer in 0-4, or a multi-turn prompt
            that does not end with a user turn.
    """
    for where, row in rows:
        messages = helpsteer2_messages(text(row, "prompt", where))
        if messages[-1]["role"] != "user" or not messages[0]["content"]:
            raise InputError(f"{where}: field 'prompt': the turns (split at <extra_id_1>User / Assistant) must "
                             "start and end with a user turn")
        response = text(row, "response", where).strip()
        labels = {k: int(number(row, k, where, lo=0, hi=4, whole=True)) for k in HELPSTEER2_RATINGS}
        yield [Sample(hh_prompt(messages), response, name, messages, labels)]


def _rating(annotations: dict, aspect: str, where: str) -> float | None:
    """An UltraFeedback aspect's `Rating`: "1".."5" as a number, "N/A" as missing (None)."""
    entry = annotations.get(aspect)
    value = entry.get("Rating") if isinstance(entry, dict) else None
    if isinstance(value, str) and value.strip().upper() == "N/A":
        return None
    try:
        rating = float(value)
    except (TypeError, ValueError):
        rating = float("nan")
    if not 1 <= rating <= 5:
        raise InputError(f"{where}.annotations.{aspect}.Rating: expected 1-5 or \"N/A\", got {value!r}")
    return rating


def read_ultrafeedback(rows: Iterable[tuple[str, dict]], name: str, columns: dict[str, str]) -> Iterator[list[Sample]]:
    """Every completion of each instruction, labelled with the four aspect ratings (1-5; None for
    "N/A"), `overall_score`, `fine_grained_score`, `model`, `subset` (the row's `source`),
    `pair_id` (the row) and `response_id` (the completion's index).

    Raises:
        InputError: a missing instruction or completions list, a completion without a text response
            or annotations, or a rating that is neither 1-5 nor "N/A".
    """
    for where, row in rows:
        instruction = text(row, "instruction", where).strip()
        completions = row.get("completions")
        if hasattr(completions, "tolist"):
            completions = completions.tolist()
        if not isinstance(completions, list):
            raise InputError(f"{where}: field 'completions' must be a list of completions, got "
                             f"{type(completions).__name__}")
        prompt = hh_prompt([{"role": "user", "content": instruction}])
        samples = []
        for i, c in enumerate(completions):
            at = f"{where}: completions[{i}]"
            if not isinstance(c, dict):
                raise InputError(f"{at}: expected an object with response and annotations")
            response = text(c, "response", at).strip()
            annotations = c.get("annotations")
            if not isinstance(annotations, dict):
                raise InputError(f"{at}: missing field 'annotations' (the per-aspect ratings)")
            labels = {aspect: _rating(annotations, aspect, at) for aspect in ULTRAFEEDBACK_ASPECTS}
            for ours, theirs in (("overall_score", "overall_score"), ("fine_grained_score", "fine-grained_score")):
                value = c.get(theirs)
                labels[ours] = None if missing(value) else number(c, theirs, at)
            labels.update(model=label_value(c.get("model")), subset=label_value(row.get("source")),
                          pair_id=where, response_id=i)
            samples.append(Sample(prompt, response, name, None, labels))
        yield samples
