"""HH-RLHF transcripts: "\\n\\nHuman: ...\\n\\nAssistant: ..." turns. A transcript splits at the last
"\\n\\nAssistant:" into the prompt (the whole dialogue before it, every turn kept) and the
response. The prompt is kept both as HH text (what HH reward models were trained on) and as chat
messages (so any chat template applies).
"""

from __future__ import annotations

import re

ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
_HUMAN = re.compile(r"\n\nHuman:[ ]?")


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
