"""The collapse rule on hand-written, real-looking responses, both ways."""

import numpy as np
import pytest

from paretohqd.evaluate.collapse import REASONS, collapse_rate, collapse_reason, collapse_reasons

CLEAN = {
    "prose": "Paris is the capital of France. It has been the seat of the French government since the "
             "tenth century, apart from a few short periods. Today it is also the largest city in the country.",
    "numbered list": "Here are a few ideas:\n\n1. Preheat the oven to 350 degrees.\n2. Mix the flour, sugar and "
                     "eggs in a bowl.\n3. Pour the batter into a greased pan.\n4. Bake for 30 minutes.",
    "bullets with a shared opening": "You could try:\n- You could try a walk after dinner.\n- A warm bath before "
                                     "bed helps some people.\n- Keep the room cool and dark.",
    "python code": "Sure, here is a function:\n\n```python\ndef flatten(xs):\n    out = []\n    for x in xs:\n"
                   "        if isinstance(x, list):\n            out.extend(flatten(x))\n        else:\n"
                   "            out.append(x)\n    return out\n```",
    "nested js": "Try this:\n\nfunction f(a) {\n  if (a) {\n    while (a.next) {\n      for (const b of a) {\n"
                 "        if (b) {\n          go(b);\n        }\n      }\n    }\n  }\n}",
    "markdown table": "| name | age |\n|------|-----|\n| Ann | 31 |\n| Bob | 45 |\n\nBoth are older than thirty.",
    "markdown rule": "First part of the answer goes here.\n\n----------\n\nSecond part of the answer goes here.",
    "short but valid": "Yes, you can do that.",
    "exactly five words": "It depends on the weather.",
    "ellipsis": "Well... I think it depends on what you want to achieve, honestly.",
    "big number": "The population is about 1000000 people, give or take a few thousand.",
    "a laugh": "Hahaha, that is a good one! Here is another: why did the chicken cross the road?",
    "a phrase said twice": "I can tell you what it means, but I'm not sure I can tell you what you're asking for.",
    "non-English": "Le chat est sur la table, et le chien dort dans le jardin.",
}

DEGENERATE = {
    "empty": ("", "empty"),
    "whitespace": ("  \n\t ", "empty"),
    "one word": ("Yes.", "too_short"),
    "four words": ("I don't know, sorry.", "too_short"),
    "dots": ("Sure.......... let me think about it for a second.", "filler"),
    "spaced dots": ("I am not sure . . . . . what you mean by that question.", "filler"),
    "exclamations": ("That is amazing!!!!!! I love it so much, thank you.", "filler"),
    "emoji run": ("That is so funny 😂😂😂😂😂😂 you made my day today.", "filler"),
    "emoticons": ("Thank you so much :) :) :) :) :) :)", "filler"),
    "interrobangs": ("What do you mean?!?!?!?!?! I do not understand you.", "filler"),
    "laughter": ("hahahahahahahahaha that is the best joke ever told.", "filler"),
    "one word again and again": ("lol lol lol lol lol lol that is great", "filler"),
    "sentence loop": ("I'm sorry, I can't help with that. " * 4, "repetitive"),
    "phrase loop": ("The best way to do this is to ask. The best way to do this is to ask. The best way "
                    "to do this is to ask. The best way to", "repetitive"),
    "list loop": ("The Bachelor, The Masked Singer, The Mandalorian, The Masked Singer, The Mandalorian, "
                  "The Masked Singer, The Mandalorian, The Masked Singer", "repetitive"),
    "not text": (None, "empty"),
}


@pytest.mark.parametrize("name", CLEAN)
def test_clean_responses_are_not_flagged(name):
    assert collapse_reason(CLEAN[name]) is None


@pytest.mark.parametrize("name", DEGENERATE)
def test_degenerate_responses_are_flagged_with_their_reason(name):
    text, reason = DEGENERATE[name]
    assert collapse_reason(text) == reason


def test_every_reason_is_exercised_and_named():
    assert {r for _, r in DEGENERATE.values()} == set(REASONS)


def test_vectorised_matches_scalar_and_rate():
    texts = list(CLEAN.values()) + [t for t, _ in DEGENERATE.values()]
    reasons = collapse_reasons(texts)
    assert isinstance(reasons, np.ndarray) and reasons.dtype == object
    assert reasons.tolist() == [collapse_reason(t) for t in texts]
    assert collapse_rate(reasons) == pytest.approx(len(DEGENERATE) / len(texts))
    assert np.isnan(collapse_rate([]))
