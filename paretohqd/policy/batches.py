"""Training batches of token ids: a (prompt, response) sample encoded, a micro-batch left-padded
with its labels, each step's samples planned and split into micro-batches of similar length under a
token budget (SFT's loop, `sft.train_loop`, and MODPO's pairs in it)."""

from __future__ import annotations

import numpy as np
import torch

from paretohqd.policy.prompts import hh_text, prompt_ids

IGNORE = -100  # the label of a position the loss skips (prompt, padding), as torch's cross_entropy


def encode(tokenizer, messages: list[dict], response: str, max_length: int, fmt: str = "chat") -> tuple[list[int], int]:
    """Tokenize a (prompt, response) sample in the prompt format `fmt` (`chat`: the tokenizer's chat
    template; `hh`: the raw HH transcript, see `prompts.hh_text`). Returns (token ids, number of
    prompt tokens).

    The target always ends with the EOS token (a model trained without it never learns to stop;
    RiC#9), and nothing after it: a chat template's trailing newline is never generated anyway.
    Prompts longer than the budget lose their oldest tokens first (an `hh` prompt keeps its BOS);
    the response is kept whole (up to `max_length` - 1 tokens, EOS included) because it is what the
    loss is about.
    """
    eos = tokenizer.eos_token_id
    if fmt == "hh":
        prompt, answer = _hh_split(tokenizer, messages, response)
    else:
        prompt = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"])
        full = list(tokenizer.apply_chat_template(
            list(messages) + [{"role": "assistant", "content": response}], tokenize=True)["input_ids"])
        if full[: len(prompt)] == prompt:
            answer = full[len(prompt):]
            answer = answer[:len(answer) - answer[::-1].index(eos)] if eos in answer else answer + [eos]
        else:  # a template that renders history differently once an answer follows
            answer = tokenizer(response, add_special_tokens=False)["input_ids"] + [eos]
    answer = answer[:-1][: max_length - 2] + [eos]
    # Llama-2 was trained with BOS first: a cut prompt keeps it (a chat template's first token is its own)
    head = prompt[:1] if fmt == "hh" and prompt[:1] == [tokenizer.bos_token_id] else []
    rest = prompt[len(head):]
    room = max_length - len(answer) - len(head)  # >= 0: the answer has at most max_length - 1 tokens
    prompt = head + rest[max(0, len(rest) - room):] if room > 0 else head
    return prompt + answer, len(prompt)


def _hh_split(tokenizer, messages: list[dict], response: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids + EOS) of an `hh` sample: the prompt exactly as generation encodes it
    (`prompts.prompt_ids`, BOS included), the answer as the rest of the whole transcript's encoding.

    The answer is not `" " + response` encoded on its own: a SentencePiece tokenizer (Llama-2's,
    as its `tokenizer.json` is written) encodes that with a lone "▁" in front, which the whole
    transcript does not have, so the model would learn to start every answer with a token it never
    sees there (docs/reproducing-the-paper.md, "Llama-2 tokenisation"; tests/test_llama2_tokenizer.py).
    """
    prompt = prompt_ids(tokenizer, messages, "hh")
    full = tokenizer(f"{hh_text(messages)} {response}")["input_ids"]
    if full[:len(prompt)] == prompt:
        return prompt, full[len(prompt):] + [tokenizer.eos_token_id]
    # a tokenizer that merges across the boundary (none known): the answer encoded alone
    return prompt, tokenizer(" " + response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def collate(samples: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad a micro-batch. Labels are -100 on prompt and padding; `keep` = logits needed."""
    width = max(len(ids) for ids, _ in samples)
    keep = max(len(ids) - n_prompt for ids, n_prompt in samples) + 1  # +1: first answer token's predictor
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)  # (B, T)
    attention = torch.zeros((len(samples), width), dtype=torch.long)  # (B, T)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)  # (B, T)
    for row, (ids, n_prompt) in enumerate(samples):
        start = width - len(ids)
        input_ids[row, start:] = torch.tensor(ids)
        attention[row, start:] = 1
        labels[row, start + n_prompt:] = torch.tensor(ids[n_prompt:])
    # positions count real tokens only, so left padding changes nothing in the maths
    position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention, "position_ids": position_ids,
            "labels": labels, "keep": min(keep, width)}


def on_device(batch: dict, device) -> dict:
    """`collate`'s batch with its tensors on `device`."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def step_plan(lengths: list[int], steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Sample indices for each step: epochs of a seeded shuffle, `batch_size` per step,
    each step's samples sorted by length (so micro-batches group similar lengths)."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        order.extend(rng.permutation(len(lengths)).tolist())
    return [sorted(order[s * batch_size:(s + 1) * batch_size], key=lambda i: lengths[i]) for s in range(steps)]


def micro_batches(indices: list[int], lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Split length-sorted indices into micro-batches whose padded size stays under `max_tokens`
    (a single longer sample still gets its own micro-batch).

    Examples:
        >>> micro_batches([0, 1, 2, 3], [100, 120, 300, 500], 600)
        [[0, 1], [2], [3]]
    """
    out: list[list[int]] = []
    for i in indices:
        if out and (len(out[-1]) + 1) * max(lengths[j] for j in out[-1] + [i]) <= max_tokens:
            out[-1].append(i)
        else:
            out.append([i])
    return out
