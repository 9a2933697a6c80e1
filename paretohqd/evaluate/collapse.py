"""Collapse: is a response degenerate? One rule set, used for the collapse rate in every report.

A response is degenerate when any of these holds (checked in this order; the first names it):

- ``empty``: nothing but whitespace (or not text at all).
- ``filler``: a run of filler, any of
    * a symbol group of 1-3 characters with no letter or digit (``.``, ``!?``, ``:)``, ``😂``)
      repeated `FILLER_REPEATS` (5) or more times in a row, spaces between allowed (``.....``,
      ``:) :) :) :) :)``); groups made only of ``- = _ * # ~ | ` ( ) [ ] { }`` are exempt,
      because markdown rules, tables, headings, code fences and closing brackets of nested code
      are built from them;
    * a letter group of 1-3 letters repeated `LETTER_REPEATS` (6) or more times inside a word
      (``hahahahahaha``, ``zzzzzz``); digits are exempt (``1000000`` is a number);
    * one word repeated `WORD_REPEATS` (5) or more times in a row (``lol lol lol lol lol``).
- ``repetitive``: word `NGRAM`-grams (4 words, lower-cased, punctuation dropped) that occur
  `REPEAT_COUNT` (3) or more times cover at least `REPEAT_SHARE` (50%) of the words: the text
  loops (a sentence or phrase said again and again). Three, not two: a phrase said twice is
  common in clean text ("I can tell you what it means, but not what you're asking for"
  repeats "tell you what"); on 9,332 human-written HH-RLHF responses, twice flagged 30 and
  three times 9, nearly all of them real loops.
- ``too_short``: fewer than `MIN_WORDS` (5) words, a word being a run of letters/digits
  (apostrophes inside kept: ``don't`` is one word).

Clean prose, numbered lists, code, and short answers of 5 or more words pass.

The rule is ours. The ParetoHqD paper reports collapse rates ("repetitive phrases or extremely short
responses") without a rule that decides one, and its code was not reachable, so its numbers and ours
measure the same idea with possibly different rules; the thresholds above are stated, and were
checked against human-written HH-RLHF answers as said.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

import numpy as np

MIN_WORDS = 5
"""Fewer words than this is too short to be an answer."""
FILLER_REPEATS = 5
"""A symbol group (no letters or digits) repeated this many times in a row is filler."""
LETTER_REPEATS = 6
"""A 1-3 letter group repeated this many times inside a word is filler."""
WORD_REPEATS = 5
"""One word this many times in a row is filler."""
NGRAM = 4
"""Word n-gram length of the repetition rule."""
REPEAT_COUNT = 3
"""An n-gram counts as repeated from this many occurrences."""
REPEAT_SHARE = 0.5
"""Share of words covered by repeated n-grams at which a text counts as looping."""

REASONS = ("empty", "filler", "repetitive", "too_short")

_WORD = re.compile(r"\w+(?:['’]\w+)*")
# a 1-3 char group of non-word, non-space characters, then the same group again (spaces allowed)
_SYMBOL_RUN = re.compile(r"([^\w\s]{1,3}?)(?:\s*\1){%d,}" % (FILLER_REPEATS - 1))
_LETTER_RUN = re.compile(r"([^\W\d_]{1,3}?)\1{%d,}" % (LETTER_REPEATS - 1))
# markdown rules/tables/headings/fences and nested code brackets legitimately repeat these
_EXEMPT = set("-=_*#~|`{}[]()")


def collapse_reason(text: str) -> str | None:
    """Why `text` is degenerate (one of `REASONS`), or None if it is not.

    Args:
        text: one model response.

    Returns:
        "empty", "filler", "repetitive", "too_short", or None.

    Examples:
        >>> collapse_reason("Paris is the capital of France.") is None
        True
        >>> collapse_reason("Sure..........")
        'filler'
        >>> collapse_reason("I am a robot. I am a robot. I am a robot.")
        'repetitive'
        >>> collapse_reason("Yes.")
        'too_short'
    """
    if not isinstance(text, str) or not text.strip():
        return "empty"
    words = _WORD.findall(text.lower())
    if _has_filler(text, words):
        return "filler"
    if _repeated_share(words, NGRAM, REPEAT_COUNT) >= REPEAT_SHARE:
        return "repetitive"
    if len(words) < MIN_WORDS:
        return "too_short"
    return None


def collapse_reasons(texts: Iterable[str]) -> np.ndarray:
    """`collapse_reason` of every text.

    Args:
        texts: N responses.

    Returns:
        (N,) object array of reasons (None where the text is fine).

    Examples:
        >>> collapse_reasons(["", "A fine answer with six words.", "ok"]).tolist()
        ['empty', None, 'too_short']
    """
    return np.array([collapse_reason(t) for t in texts], dtype=object)


def collapse_rate(reasons: Iterable[str | None]) -> float:
    """Share of flagged responses (NaN for none).

    Examples:
        >>> collapse_rate(["empty", None, None, "filler"])
        0.5
    """
    flags = [r is not None for r in reasons]
    return float(np.mean(flags)) if flags else float("nan")


def _has_filler(text: str, words: list[str]) -> bool:
    for m in _SYMBOL_RUN.finditer(text):
        if not set(m.group(1)) <= _EXEMPT:
            return True
    if any(_LETTER_RUN.search(w) for w in words):
        return True
    run = 1
    for prev, word in zip(words, words[1:]):
        run = run + 1 if word == prev else 1
        if run >= WORD_REPEATS:
            return True
    return False


def _repeated_share(words: list[str], n: int, count: int) -> float:
    """Share of word positions inside some n-gram that occurs at least `count` times.

    Examples:
        >>> _repeated_share("a b c d a b c d a b c d".split(), 4, 3)
        1.0
        >>> _repeated_share("a b c d a b c d x y z w".split(), 4, 3)
        0.0
        >>> _repeated_share("a b c d a b c d x y z w".split(), 4, 2)
        0.6666666666666666
    """
    if len(words) < n + count - 1:  # too few words for `count` occurrences, even overlapping
        return 0.0
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = np.zeros(len(words), dtype=bool)  # (n_words,)
    for i, g in enumerate(grams):
        if counts[g] >= count:
            covered[i:i + n] = True
    return float(covered.mean())
