"""The `hf` backend's decoding loop: what `model.generate` does for one batch, minus the work that
is wasted when a policy of ~100M parameters answers on CPU cores (`benchmarks/bench_generate.py`
measures each step):

- every prompt is encoded without padding (on CPU; a GPU encodes the batch at once, padded), the
  prompt prefix the batch shares (the chat template's system turn) once, and only the last
  position's logits are computed: in a padded batch of HH prompts most of the work is padding;
- the KV cache is one buffer per layer, written in place: `DynamicCache` copies the whole cache
  at every token (torch.cat);
- a row that has ended (EOS or a stop string) leaves the batch, so the rows still answering
  no longer pay for it.

Greedy answers equal `model.generate`'s on each prompt alone (tests/test_generate_fast.py);
sampling uses transformers' own temperature / top-k / top-p warpers and `torch.multinomial`, as
`model.generate` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from paretohqd.config import GenerateConfig


class _Buffer(DynamicLayer):
    """One layer's KV cache, (rows, kv heads, columns, head dim), in a buffer allocated once for the
    whole answer: a step writes its column in place, and keys/values are views of the filled part."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, filled: int):
        super().__init__()
        self.kbuf, self.vbuf, self.filled = keys, values, filled
        self.device, self.is_initialized = keys.device, True
        self._view()

    def _view(self) -> None:
        self.keys, self.values = self.kbuf[:, :, :self.filled], self.vbuf[:, :, :self.filled]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n = key_states.shape[-2]
        self.kbuf[:, :, self.filled:self.filled + n] = key_states
        self.vbuf[:, :, self.filled:self.filled + n] = value_states
        self.filled += n
        self._view()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.kbuf, self.vbuf = self.kbuf[indices], self.vbuf[indices]
        self._view()


def decode(model, prompts: list[list[int]], cfg: GenerateConfig, *, eos: set[int], pad: int,
           ended: Callable[[list[int]], bool] | None = None,
           on_tokens: Callable[[list[int]], Collection[int] | None] | None = None,
           adapters: list[str] | None = None, padded: bool | None = None) -> list[list[int]]:
    """Answer each tokenised prompt of one batch: greedy (cfg.temperature 0) or sampled with
    cfg.temperature / top_k / top_p, at most cfg.max_new_tokens each, from torch's global random
    stream (the caller seeds it).

    Args:
        eos: token ids that end an answer (kept as its last token).
        pad: the token `on_tokens` gets for a row that has ended.
        ended: called with a row's new tokens after each one; True ends the row (a stop string).
        on_tokens: called after every step with each row's new token (`pad` once it has ended);
            the rows it returns (indices into `prompts`) end now, their answer so far kept.
        adapters: per row, the adapter of a PEFT model with several loaded that answers it.
        padded: encode the prompts in one left-padded call (default: on a GPU) rather than one
            at a time after their shared prefix (default on CPU).

    Returns each row's new token ids, its EOS included.

    Longer than ~60 lines on purpose: the per-token loop (sample, end rows, drop them from the
    cache) reads top to bottom in one place, as nanoGPT's `generate`, rather than across helpers.
    """
    rows, device = len(prompts), model.device
    lengths = [len(p) for p in prompts]
    width = max(lengths)
    logits, caches = _encode(model, prompts, adapters, device.type != "cpu" if padded is None else padded)
    # one left-padded buffer per layer, room for every answer token: row i's prompt ends at column `width`
    columns = width + cfg.max_new_tokens
    layers = []
    for j in range(len(caches[0][0].layers)):
        first = caches[0][0].layers[j]
        keys = first.keys.new_zeros((rows, first.keys.shape[1], columns, first.keys.shape[3]))
        values = keys.new_zeros((rows, first.values.shape[1], columns, first.values.shape[3]))
        for i, (cache, r) in enumerate(caches):
            layer, n = cache.layers[j], lengths[i]
            keys[i, :, width - n:width] = layer.keys[r, :, -n:]  # a left-padded row: its last n columns
            values[i, :, width - n:width] = layer.values[r, :, -n:]
        layers.append(_Buffer(keys, values, width))
    del caches
    cache = Cache(layers=layers)
    mask = torch.zeros((rows, columns), dtype=torch.long, device=device)
    for i, n in enumerate(lengths):
        mask[i, width - n:] = 1
    positions = torch.tensor(lengths, device=device).unsqueeze(1)  # (rows, 1): each row's next position
    warp = _warpers(cfg)
    live = list(range(rows))  # the rows still answering, in cache order
    out: list[list[int]] = [[] for _ in range(rows)]
    for step in range(cfg.max_new_tokens):
        if warp is None:
            new = logits.argmax(-1)
        else:
            new = torch.multinomial(torch.softmax(warp(None, logits.float()), dim=-1), 1).squeeze(1)
        stream = [pad] * rows
        keep = []
        for k, (i, token) in enumerate(zip(live, new.tolist())):
            out[i].append(token)
            stream[i] = token
            if token not in eos and not (ended is not None and ended(out[i])):
                keep.append(k)
        if on_tokens is not None and (gone := on_tokens(stream)):
            keep = [k for k in keep if live[k] not in gone]  # their client left: they leave the batch
        if not keep or step == cfg.max_new_tokens - 1:
            break
        if len(keep) < len(live):  # ended rows leave the batch
            chosen = torch.tensor(keep, device=device)
            cache.batch_select_indices(chosen)
            mask, positions, new = mask[chosen], positions[chosen], new[chosen]
            live = [live[k] for k in keep]
        extra = {"adapter_names": [adapters[i] for i in live]} if adapters is not None else {}
        logits = model(input_ids=new.unsqueeze(1), attention_mask=mask[:, :width + step + 1],
                       position_ids=positions + step, cache=cache, use_cache=True,
                       logits_to_keep=1, **extra).logits[:, -1]
    return out


def _encode(model, prompts: list[list[int]], adapters: list[str] | None, padded: bool) -> tuple[torch.Tensor, list]:
    """Every prompt's last-position logits (rows, vocab), and per prompt (KV cache, row) where its
    tokens are the last columns of that row: `padded`, the whole batch left-padded in one call (a
    GPU's time goes to kernel launches, not to padding); else one prompt at a time after the prefix
    they share (a CPU's time goes to the arithmetic, half of it padding in a batch of HH prompts)."""
    device = model.device
    if padded:
        width = max(map(len, prompts))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        extra = {"adapter_names": adapters} if adapters is not None else {}
        out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                    use_cache=True, logits_to_keep=1, **extra)
        return out.logits[:, -1], [(out.cache, i) for i in range(len(prompts))]
    # the prefix every row shares is encoded once, when every row has the same weights (and one
    # token is left for each row to encode, whose logits start its answer)
    shared = len(os.path.commonprefix(prompts)) if adapters is None or len(set(adapters)) == 1 else 0
    shared = min(shared, min(map(len, prompts)) - 1)
    prefix = model(input_ids=torch.tensor([prompts[0][:shared]], device=device), use_cache=True, logits_to_keep=1,
                   **({"adapter_names": adapters[:1]} if adapters is not None else {})).cache if shared > 0 else None
    logits, caches = [], []
    for i, p in enumerate(prompts):
        # a copy of the prefix's cache, continued by this prompt's tokens
        cache = DynamicCache([(layer.keys, layer.values) for layer in prefix.layers] if prefix is not None else None)
        extra = {"adapter_names": [adapters[i]]} if adapters is not None else {}
        out = model(input_ids=torch.tensor([p[shared:]], device=device), cache=cache, use_cache=True,
                    logits_to_keep=1, **extra)
        logits.append(out.logits[:, -1])
        caches.append((out.cache, 0))
    return torch.cat(logits), caches


def _warpers(cfg: GenerateConfig) -> LogitsProcessorList | None:
    """transformers' sampling warpers for `cfg`, in `model.generate`'s order; None for greedy."""
    if cfg.temperature == 0:
        return None
    warp = LogitsProcessorList([TemperatureLogitsWarper(cfg.temperature)])
    if cfg.top_k > 0:
        warp.append(TopKLogitsWarper(cfg.top_k))
    if cfg.top_p < 1.0:
        warp.append(TopPLogitsWarper(cfg.top_p))
    return warp
