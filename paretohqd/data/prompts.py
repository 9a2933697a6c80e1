"""Prompts from a file for `paretohqd generate` and `paretohqd evaluate --prompts`: one prompt a
line (.txt), or rows (.jsonl, .parquet) with a `prompt` text or a `messages` conversation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from paretohqd.data.transcript import to_messages
from paretohqd.io import InputError, read_table


def prompt_messages(text: str) -> list[dict]:
    """A prompt as a conversation: HH transcript text (`\\n\\nHuman: ...`) split into its turns,
    any other text one user turn.

    Examples:
        >>> prompt_messages("What is a llama?")
        [{'role': 'user', 'content': 'What is a llama?'}]
        >>> prompt_messages("\\n\\nHuman: Hi\\n\\nAssistant: Hello!\\n\\nHuman: A joke?\\n\\nAssistant:")
        [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}, {'role': 'user', 'content': 'A joke?'}]
    """
    if "Human:" not in text:
        return [{"role": "user", "content": text.strip()}]
    stripped = text.rstrip()
    if stripped.endswith("Assistant:"):  # the transcript ends where the answer starts
        stripped = stripped[:-len("Assistant:")]
    return [m for m in to_messages(stripped) if m["content"]]


def _check_messages(messages, where: str) -> list[dict]:
    fix = 'give a list of {"role": "user"|"assistant"|"system", "content": TEXT} ending with a user turn'
    if not isinstance(messages, (list, tuple, np.ndarray)) or len(messages) == 0:
        raise InputError(f"{where}: messages is not a non-empty list; {fix}")
    out = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant", "system") \
                or not isinstance(m.get("content"), str):
            raise InputError(f"{where}: a message is not {{role, content}} with a known role; {fix}")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "user":
        raise InputError(f"{where}: the last message is not the user's; {fix}")
    return out


def _row_prompt(row: dict, where: str) -> tuple[str, list[dict]]:
    if row.get("messages") is not None and not (isinstance(row.get("messages"), float)):
        messages = _check_messages(list(row["messages"]), where)
        return str(row.get("prompt") or messages[-1]["content"]), messages
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"{where}: no prompt; give a non-empty `prompt` text (plain text or an HH transcript) "
                         f"or a `messages` list")
    return prompt, prompt_messages(prompt)


def read_prompts(path: str | Path) -> tuple[list[str], list[list[dict]]]:
    """The prompts of a file: .txt (one prompt a line, blank lines skipped), or .jsonl / .parquet
    rows with a `prompt` (plain text = one user turn, or HH transcript text) or a `messages` column.

    Returns:
        The prompt texts (for the output table) and their conversations.

    Raises:
        InputError: no such file, another suffix, or a bad row (named `file:line`, and the fix).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    rows: list[tuple[str, dict]] = []
    if suffix == ".txt":
        rows = [(f"{path}:{i}", {"prompt": line}) for i, line in enumerate(path.read_text().splitlines(), 1)
                if line.strip()]
    elif suffix == ".jsonl":
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{i}: not JSON ({e.msg}); write one object a line, "
                                 f'e.g. {{"prompt": "What is a llama?"}}') from None
            if not isinstance(row, dict):
                raise InputError(f'{path}:{i}: not a JSON object; write one object a line, e.g. {{"prompt": "What is a llama?"}}')
            rows.append((f"{path}:{i}", row))
    elif suffix == ".parquet":
        df = read_table(path)
        if not {"prompt", "messages"} & set(df.columns):
            raise InputError(f"{path}: no `prompt` or `messages` column (columns: {', '.join(map(str, df.columns))})")
        rows = [(f"{path}:row {i + 1}", row) for i, row in enumerate(df.to_dict("records"))]
    else:
        raise InputError(f"{path}: unknown prompts format; use .txt (one prompt a line), .jsonl or .parquet")
    if not rows:
        raise InputError(f"{path}: no prompts in the file")
    prompts, conversations = zip(*(_row_prompt(row, where) for where, row in rows))
    return list(prompts), list(conversations)
