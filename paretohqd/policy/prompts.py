"""How a conversation becomes the policy's prompt text."""

from __future__ import annotations


def with_tag(messages: list[dict], tag: str) -> list[dict]:
    """The conversation with `tag` on a line of its own after the last user turn (a new copy):
    where RiC's reward tags go (`paretohqd.methods.ric`).

    Examples:
        >>> with_tag([{"role": "user", "content": "Hi"}], "<helpful_score> 1.0")
        [{'role': 'user', 'content': 'Hi\\n\\n<helpful_score> 1.0'}]
    """
    out = [dict(m) for m in messages]
    users = [i for i, m in enumerate(out) if m["role"] == "user"]
    if not users:  # no user turn to attach to: the tag becomes one
        return [{"role": "user", "content": tag}, *out]
    out[users[-1]]["content"] = f"{out[users[-1]]['content']}\n\n{tag}"
    return out
