"""Rule objectives: exact scores computed from the text, named `rule:...` in `rewards.models`.

A rule needs no training, no weights and no device, and scores exactly (no judge noise), so it
shows what the selection itself does. Two kinds:

- built-ins (`BUILTINS`): `rule:length_words`, `rule:length_tokens`, `rule:target_length:N`,
  `rule:vader`, `rule:diversity`, `rule:overlap`;
- a user function `rule:package.module:function` or `rule:path/to/file.py:function` with TRL's
  reward-function shape, `f(prompts: list[str], completions: list[str], **kw) -> list[float]`
  (https://huggingface.co/docs/trl/main/en/grpo_trainer#using-a-custom-reward-function); the
  prompts are HH text without the trailing "Assistant:", and no keyword arguments are passed.

Scores are cached like any reward model's: the fingerprint hashes the rule's name with a built-in's
version, or with the whole source text of the user function's module (so editing the function, or
a helper beside it, scores again).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import re
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from paretohqd.config import ConfigError

RULE = "rule:"
"""Prefix of a rule objective's value in `rewards.models`."""
VERSION = "1"
"""The built-ins' definitions; bump it when one changes, so cached scores are not reused."""

RewardFunc = Callable[..., Sequence[float]]

_TOKEN = re.compile(r"\w+|[^\w\s]")  # a run of word characters, or one punctuation mark
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")  # on lowercased text: "don't" is one word
# words too common to count as the prompt's content (`overlap`)
_STOP = frozenset("""a about above after again all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have
having he her here hers him his how i if in into is it its itself just me more most my no nor not now of
off on once only or other our ours out over own same she should so some such than that the their them then
there these they this those through to too under until up very was we were what when where which while who
whom why will with would you your yours yourself please tell know like get want think""".split())


def length_words(prompts: Sequence[str], completions: Sequence[str], **_) -> list[float]:
    """Words in each completion (whitespace-separated pieces).

    Examples:
        >>> length_words(["q", "q"], ["Hello there, friend.", "  "])
        [3.0, 0.0]
    """
    return [float(len(c.split())) for c in completions]


def length_tokens(prompts: Sequence[str], completions: Sequence[str], **_) -> list[float]:
    """Tokens in each completion by a tokenizer-free rule: each run of word characters and each
    punctuation mark is one token (not the policy's tokenizer, so a score does not depend on it).

    Examples:
        >>> length_tokens(["q"], ["Hello there, friend."])
        [5.0]
    """
    return [float(len(_TOKEN.findall(c))) for c in completions]


def target_length(n: int) -> RewardFunc:
    """Closeness of each completion's word count to `n`: -|words - n| / n (0 at exactly n words).

    Examples:
        >>> target_length(4)(["q", "q"], ["one two three four", "one two"])
        [-0.0, -0.5]
    """

    def score(prompts: Sequence[str], completions: Sequence[str], **_) -> list[float]:
        return [-abs(w - n) / n for w in length_words(prompts, completions)]

    return score


def diversity(prompts: Sequence[str], completions: Sequence[str], **_) -> list[float]:
    """Lexical diversity: distinct words / words (type-token ratio, lowercased), 0 for no words.
    It falls as an answer grows (words repeat), so it pulls against length.

    Examples:
        >>> diversity(["q", "q", "q"], ["the cat saw the dog", "", "Yes yes"])
        [0.8, 0.0, 0.5]
    """
    out = []
    for c in completions:
        words = _WORD.findall(c.lower())
        out.append(len(set(words)) / len(words) if words else 0.0)
    return out


def content_words(prompt: str) -> set[str]:
    """The content words of a prompt's last human turn: lowercased words of 3+ letters, not stopwords.

    Examples:
        >>> sorted(content_words("Human: hi\\n\\nAssistant: Hello!\\n\\nHuman: How do I bake bread?"))
        ['bake', 'bread']
    """
    last = prompt.rsplit("Human:", 1)[-1]
    return {w for w in _WORD.findall(last.lower()) if len(w) >= 3 and w not in _STOP}


def overlap(prompts: Sequence[str], completions: Sequence[str], **_) -> list[float]:
    """Share of the prompt's content words (`content_words`) the completion mentions; 0 when the
    prompt has none.

    Examples:
        >>> overlap(["Human: How do I bake bread?", "Human: hi"], ["Bread: bake it hot.", "hello"])
        [1.0, 0.0]
        >>> overlap(["Human: bake bread"], ["You bake."])
        [0.5]
    """
    out = []
    for p, c in zip(prompts, completions):
        wanted = content_words(p)
        out.append(len(wanted & set(_WORD.findall(c.lower()))) / len(wanted) if wanted else 0.0)
    return out


def vader() -> RewardFunc:
    """VADER compound sentiment of each completion, in [-1, 1] (the lexicon ships in the package).

    Examples:
        >>> [round(s, 4) for s in vader()(["q", "q"], ["I love it, great!", ""])]
        [0.8622, 0.0]
    """
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise ConfigError("rule:vader needs the vaderSentiment package (its lexicon ships inside it): "
                          "pip install vaderSentiment, or the offline extra") from None
    analyzer = SentimentIntensityAnalyzer()

    def score(prompts: Sequence[str], completions: Sequence[str], **_) -> list[float]:
        return [float(analyzer.polarity_scores(c)["compound"]) for c in completions]

    return score


def _vader_version() -> str:
    from importlib.metadata import version

    return version("vaderSentiment")


# name -> (argument -> function, what the version string adds); the argument is the text after
# `rule:NAME:`, None when there is none
BUILTINS: dict[str, tuple[Callable[[str | None], RewardFunc], Callable[[], str]]] = {
    "length_words": (lambda a: _no_arg("length_words", a, length_words), str),
    "length_tokens": (lambda a: _no_arg("length_tokens", a, length_tokens), str),
    "target_length": (lambda a: target_length(_positive_int("target_length", a)), str),
    "vader": (lambda a: _no_arg("vader", a, vader()), _vader_version),
    "diversity": (lambda a: _no_arg("diversity", a, diversity), str),
    "overlap": (lambda a: _no_arg("overlap", a, overlap), str),
}


def _no_arg(name: str, arg: str | None, func: RewardFunc) -> RewardFunc:
    if arg is not None:
        raise ConfigError(f"rule:{name} takes no argument (got {arg!r}); write rule:{name}")
    return func


def _positive_int(name: str, arg: str | None) -> int:
    if arg is None or not arg.isdigit() or int(arg) < 1:
        raise ConfigError(f"rule:{name} needs a whole number of words > 0, e.g. rule:{name}:60 (got {arg!r})")
    return int(arg)


def load_rule(name: str) -> tuple[RewardFunc, str]:
    """The function rule `name` (`rule:...`) names, and the text its fingerprint hashes.

    Raises:
        ConfigError: an unknown built-in, a bad argument, a file or module that cannot be loaded or
            lacks the function; the message says what to write.
    """
    spec = name[len(RULE):].strip()
    head, has_arg, arg = spec.partition(":")
    if head in BUILTINS:
        make, version = BUILTINS[head]
        return make(arg if has_arg else None), f"builtin {spec} v{VERSION} {version()}"
    target, sep, func_name = spec.rpartition(":")
    if not sep or not target or not func_name.isidentifier():
        raise ConfigError(f"{name!r}: not a built-in rule ({', '.join(BUILTINS)}) nor rule:module:function / "
                          "rule:path/to/file.py:function; e.g. rule:length_words or rule:my_rules.py:brevity")
    module, source = _load_module(name, target)
    func = getattr(module, func_name, None)
    if not callable(func):
        found = [n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")]
        raise ConfigError(f"{name!r}: {target} has no function {func_name!r} (it has {found or 'none'}); "
                          "name one of its functions after the last ':'")
    return func, f"user {spec}\n{source}"


def _load_module(name: str, target: str):
    """The module `target` (a .py path or a dotted module name) and its source text."""
    is_file = target.endswith(".py") or "/" in target
    try:
        if is_file:
            path = Path(target).expanduser().resolve()
            source = path.read_text()
            # a private module name per file, so two rule files of one name do not clash
            mod_name = "paretohqd_rule_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module  # (dataclasses and pickling look modules up here)
            spec.loader.exec_module(module)
            return module, source
        module = importlib.import_module(target)
        return module, inspect.getsource(module)
    except Exception as e:  # a missing file, a syntax error, whatever its top level raises
        what = "file" if is_file else "module (importable from the current folder or the environment)"
        raise ConfigError(f"{name!r}: cannot load the {what} {target!r} ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}); fix the path or the code") from None


class RuleRewardModel:
    """A rule as a reward model (`paretohqd.rewards.RewardModel`): no weights, no device.

    Args:
        name: `rule:...` as written in rewards.models.
        key: the config key it came from (`rewards.models.OBJECTIVE`), for error messages.
    """

    def __init__(self, name: str, key: str | None = None):
        self.name = name
        self.key = key or f"rewards.models ({name})"
        self.func, text = load_rule(name)
        self.fingerprint = "rule-" + hashlib.sha256(text.encode()).hexdigest()[:16]

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """One float per (prompt, response), shape (n,).

        Raises:
            ConfigError: the function raised, or did not return one finite number per completion.
        """
        n = len(responses)
        try:
            out = self.func(list(prompts), list(responses))
        except Exception as e:
            raise ConfigError(f"{self.key}: {self.name} raised {type(e).__name__}: {str(e).strip()[:160]}; "
                              "fix the function (it gets lists of prompts and completions)") from None
        try:
            values = [float(v) for v in out]
        except (TypeError, ValueError):
            raise ConfigError(f"{self.key}: {self.name} returned {type(out).__name__} {str(out)[:80]!r}, not a list "
                              "of numbers; return one float per completion") from None
        if len(values) != n:
            raise ConfigError(f"{self.key}: {self.name} returned {len(values)} scores for {n} completions; "
                              "return one float per completion, in order")
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise ConfigError(f"{self.key}: {self.name} scored completion {bad[0]} as {values[bad[0]]} "
                              f"({len(bad)} not finite); return finite numbers")
        return np.asarray(values, dtype=np.float64)  # (n,)
