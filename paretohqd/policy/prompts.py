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


# Prompt formats ----------------------------------------------------------------------------------

HH_STOP = "\n\nHuman:"
"""Where a model trained on raw HH transcripts starts writing the user's next turn: cut there."""


def resolve_format(tokenizer, requested: str) -> str:
    """`auto` -> `chat` when the tokenizer has a chat template, else `hh`; `chat` without a template
    is an error a person must fix.

    Raises:
        ConfigError: `chat` asked for, and the tokenizer has no chat template.
    """
    from paretohqd.config import ConfigError

    has_template = bool(getattr(tokenizer, "chat_template", None))
    if requested == "auto":
        return "chat" if has_template else "hh"
    if requested == "chat" and not has_template:
        raise ConfigError(f"policy.prompt_format: chat, but the tokenizer of {tokenizer.name_or_path!r} has no chat "
                          "template (a base model such as Llama-2); use hh (the raw HH transcript) or auto")
    return requested


def hh_text(messages: list[dict]) -> str:
    """The raw HH transcript of a conversation, ending where the assistant's answer starts
    (what RiC and a base Llama-2 are trained and prompted with).

    Examples:
        >>> hh_text([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        ...          {"role": "user", "content": "Joke?"}])
        '\\n\\nHuman: Hi\\n\\nAssistant: Hello!\\n\\nHuman: Joke?\\n\\nAssistant:'
    """
    turns = [f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in messages]
    return "".join(turns) + "\n\nAssistant:"


def prompt_text(tokenizer, messages: list[dict], fmt: str) -> str:
    """The text a model is prompted with: the chat template's generation prompt, or the HH transcript."""
    if fmt == "chat":
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return hh_text(messages)


def prompt_ids(tokenizer, messages: list[dict], fmt: str) -> list[int]:
    """`prompt_text`'s token ids: a chat template writes its own special tokens; raw HH text gets
    the tokenizer's (BOS)."""
    return tokenizer(prompt_text(tokenizer, messages, fmt), add_special_tokens=fmt == "hh")["input_ids"]


def stop_strings(fmt: str, extra: list[str] = ()) -> list[str]:
    """Strings that end an answer: the configured ones, and the next user turn in the HH format."""
    return list(dict.fromkeys([*extra, *([HH_STOP] if fmt == "hh" else [])]))


def cut_at_stop(text: str, stops: list[str]) -> str:
    """The answer up to the first stop string (the stop text itself removed), stripped.

    Examples:
        >>> cut_at_stop(" Sure, here it is.\\n\\nHuman: thanks", ["\\n\\nHuman:"])
        'Sure, here it is.'
    """
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[:min(cuts)] if cuts else text).strip()
