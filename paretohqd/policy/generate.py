"""Batched sampling from a policy (base or with adapters) with our decoding loop (`decode.py`), with a
progress bar; and `answer`, a run's generation, saved batch by batch so that a killed run resumes
after the last one."""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from paretohqd.config import Config, ConfigError, GenerateConfig, PolicyConfig
from paretohqd.devices import Ranks, native_bf16
from paretohqd.io import InputError, read_table, write_parquet
from paretohqd.policy.decode import decode
from paretohqd.policy.load import load_policy
from paretohqd.policy.prompts import cut_at_stop, prompt_ids, resolve_format, stop_strings
from paretohqd.progress import console, progress_bar


def load_for_generation(policy: PolicyConfig, adapter: str | Path | None, *, lora: bool = True,
                        dtype: str = "auto"):
    """The base policy, with a trained adapter merged in (or a fully fine-tuned folder), cast to
    `dtype` (`auto`: bfloat16 where the device runs it natively, else the policy's dtype).

    Weights are cast once rather than autocast: autocast re-casts every weight at every decoded
    token, which made sampling 1.7x slower than fp32 here, while bf16 weights made it 1.8x faster.
    """
    if adapter is not None and not lora:
        model = load_policy(str(adapter), dtype=policy.dtype, trust_remote_code=policy.trust_remote_code)
    else:
        model = load_policy(policy.model, dtype=policy.dtype, trust_remote_code=policy.trust_remote_code)
        if adapter is not None:
            from peft import PeftModel

            # merging removes the adapter's extra matmuls from every generated token
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return _for_generation(model, policy, dtype)


def load_mixed(policy: PolicyConfig, parts: list[tuple[Path, float]], *, lora: bool = True, dtype: str = "auto"):
    """The base policy W with the trained models' deltas mixed in: theta = W + sum_i lambda_i dW_i,
    exactly (lambda sums to 1), cast to `dtype` as `load_for_generation`.

    With LoRA, dW_i = s_i B_i A_i and PEFT's `cat` combination stacks the lambda_i s_i A_i and the
    B_i into one adapter whose product is sum_i lambda_i dW_i (`methods/soups.py` explains why not
    `linear`); it is merged into W. Fully fine-tuned models are mixed as sum_i lambda_i theta_i,
    the same point since the lambdas sum to 1.

    Args:
        policy: the `policy` config section (the base model every part was trained from).
        parts: (adapter folder, lambda) pairs; a single pair (folder, 1.0) is that model as trained.
    """
    if len(parts) == 1:
        return load_for_generation(policy, parts[0][0], lora=lora, dtype=dtype)
    if lora:
        from peft import PeftModel

        base = load_policy(policy.model, dtype=policy.dtype, trust_remote_code=policy.trust_remote_code)
        names = [f"part-{i}" for i in range(len(parts))]
        model = PeftModel.from_pretrained(base, str(parts[0][0]), adapter_name=names[0])
        for name, (folder, _) in zip(names[1:], parts[1:]):
            model.load_adapter(str(folder), adapter_name=name)
        model.add_weighted_adapter(names, [float(lam) for _, lam in parts], "mix", combination_type="cat")
        model.set_adapter("mix")
        model = model.merge_and_unload(adapter_names=["mix"])
    else:
        mixed: dict[str, torch.Tensor] = {}
        for folder, lam in parts:
            model = load_policy(str(folder), dtype=policy.dtype, trust_remote_code=policy.trust_remote_code)
            for k, v in model.state_dict().items():
                mixed[k] = mixed[k] + lam * v if k in mixed else lam * v
        model.load_state_dict(mixed)  # the last part's model, holding the mix
    return _for_generation(model, policy, dtype)


def load_adapters(policy: PolicyConfig, adapters: dict[str, str | Path], *, dtype: str = "auto"):
    """The base policy with every adapter of `adapters` (name -> folder) loaded unmerged, cast as
    `load_for_generation`: one model that answers a batch whose rows use different adapters
    (`generate(adapters=...)`, PEFT's mixed-adapter batches; `__base__` is the base model).
    `add_mix` adds exact mixes of them."""
    from peft import PeftModel

    base = load_policy(policy.model, dtype=policy.dtype, trust_remote_code=policy.trust_remote_code)
    (first, folder), *rest = adapters.items()
    model = PeftModel.from_pretrained(base, str(folder), adapter_name=first)
    for name, folder in rest:
        model.load_adapter(str(folder), adapter_name=name)
    return _for_generation(model, policy, dtype)


def add_mix(model, parts: list[tuple[str, float]], name: str) -> None:
    """Add adapter `name` to a `load_adapters` model: sum_i lambda_i dW_i of the named adapters,
    exactly (PEFT's `cat` combination, as `load_mixed`), in the model's dtype."""
    model.add_weighted_adapter([a for a, _ in parts], [float(lam) for _, lam in parts], name, combination_type="cat")
    dtype = next(p.dtype for n, p in model.named_parameters() if ".lora_A." in n)
    for n, p in model.named_parameters():
        if f".{name}." in n:
            p.data = p.data.to(dtype)


def _for_generation(model, policy: PolicyConfig, dtype: str):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if native_bf16(device) else policy.dtype
    return model.to(device=device, dtype=getattr(torch, dtype)).eval()


def generate(
    model,
    tokenizer,
    conversations: list[list[dict]],
    cfg: GenerateConfig,
    *,
    seed: int,
    fmt: str = "chat",
    label: str = "generating",
    on_tokens: Callable[[list[int], list[int]], Collection[int] | None] | None = None,
    progress: bool = True,
    adapters: list[str] | None = None,
) -> tuple[list[str], dict]:
    """One sampled response per conversation, in input order, prompted in format `fmt`
    (`prompts.prompt_text`). Sampling stops at EOS and at the stop strings, which are cut off.
    Conversations are batched longest first (`length_order`), and batch b samples from its own
    random stream, seeded `batch_seed(seed, b)`: a batch answered alone gives what it gives here.

    Args:
        on_tokens: called after every decoding step with the batch's conversation indices and
            each one's new token id (the pad token once it has finished): how `paretohqd serve`
            streams answers while a batch is still generating. The conversation indices it
            returns stop being answered (their text so far is their answer): a client that left.
        progress: show the progress bar (a server prints none per request).
        adapters: per conversation, the adapter of a `load_adapters` model that answers it.

    Returns the responses and stats (seconds, new tokens per second).
    """
    order = length_order(conversations)
    out: list[str] = [""] * len(conversations)
    n_new, t0 = 0, time.perf_counter()
    stops = stop_strings(fmt, cfg.stop)
    # the tokenizer's EOS is what training taught the model to end with; keep the model's own too
    eos = model.generation_config.eos_token_id
    eos = {*(eos if isinstance(eos, list) else [eos] if eos is not None else []), tokenizer.eos_token_id}
    pad = tokenizer.pad_token_id  # (load_tokenizer sets one)

    def met_stop(ids: list[int]) -> bool:
        text = tokenizer.decode(ids[-64:], skip_special_tokens=True)  # a stop string is a few tokens long
        return any(s in text for s in stops)

    with progress_bar(unit="prompts", enabled=progress) as bar, torch.inference_mode():
        task = bar.add_task(label, total=len(order))
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            torch.manual_seed(batch_seed(seed, start // cfg.batch_size))  # each batch its own stream
            prompts = [prompt_ids(tokenizer, conversations[i], fmt) for i in idx]
            new = decode(model, prompts, cfg, eos=eos, pad=pad, ended=met_stop if stops else None,
                         on_tokens=_by_row(on_tokens, idx) if on_tokens is not None else None,
                         adapters=[adapters[i] for i in idx] if adapters is not None else None)
            n_new += sum(t != pad for row in new for t in row)
            for i, row in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True)):
                out[i] = cut_at_stop(row, stops)
            bar.advance(task, len(idx))
    seconds = time.perf_counter() - t0
    return out, {"seconds": seconds, "new_tokens": n_new, "tokens_per_s": n_new / seconds if seconds else 0.0}


def _by_row(on_tokens: Callable, idx: list[int]) -> Callable[[list[int]], set[int]]:
    """`generate`'s `on_tokens` (conversation indices) as `decode`'s (rows of the batch `idx`)."""

    def call(tokens: list[int]) -> set[int]:
        gone = on_tokens(idx, tokens)
        return {row for row, i in enumerate(idx) if i in gone} if gone else set()

    return call


def length_order(conversations: list[list[dict]]) -> list[int]:
    """Indices of `conversations`, longest first: similar lengths share a batch (little padding),
    and an out-of-memory shows up at once.

    Examples:
        >>> length_order([[{"content": "hi"}], [{"content": "hello"}], [{"content": "yo"}]])
        [1, 0, 2]
    """
    return sorted(range(len(conversations)), key=lambda i: -len(str(conversations[i])))


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch `index` of a generation seeded `seed`: `seed` itself for the first, then
    one drawn from (seed, index) (numpy's SeedSequence, so neighbouring seeds share no stream).

    Examples:
        >>> batch_seed(3, 0), batch_seed(3, 1) == batch_seed(3, 1), batch_seed(3, 1) != batch_seed(4, 1)
        (3, True, True)
    """
    if index == 0:
        return seed
    state = np.random.SeedSequence(entropy=seed % 2**64, spawn_key=(index,)).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))  # below 2**63, which every torch generator takes


Adapter = str | Path | list[tuple[Path, float]] | None
"""A model to answer with: an adapter (or fully fine-tuned) folder, a mix of them as (folder, lambda)
pairs (`load_mixed`), or None for the base policy."""


def answer(cfg: Config, tokenizer, conversations: list[list[dict]], adapter: Adapter, *, seed: int,
           label: str, saved: Path | None = None, ranks: Ranks | None = None) -> list[str]:
    """Load the run's policy with `adapter` (None: the base model; a list: a mix), answer every
    conversation with the run's generation settings (generate.backend), print the speed; returns
    the answers in input order.

    With `saved` (a folder), each batch's answers are written there as soon as the batch is done,
    and a later call (after a kill) answers only the batches not saved yet: a kill loses one batch,
    and since every batch is seeded by its index (`batch_seed`), the answers are those of one
    uninterrupted call. A saved batch made with other prompts or settings, or that cannot be read,
    is answered again (with a warning). The caller deletes the folder once it has the answers.

    With `ranks` (every launched process calls this), the batches left are split over them
    (`Ranks.spread`): the same batches with the same seeds, so the same answers as one process;
    every rank returns them all, and the main process alone reads and writes `saved`.
    """
    ranks = ranks or Ranks()
    fmt = resolve_format(tokenizer, cfg.policy.prompt_format)
    order, size = length_order(conversations), cfg.generate.batch_size
    batches = [order[start:start + size] for start in range(0, len(order), size)]
    settings = _settings(cfg, adapter, fmt)
    keys = [[_key(conversations[i], batch_seed(seed, b), settings) for i in idx] for b, idx in enumerate(batches)]
    paths = [saved / f"batch-{b:05d}.parquet" if saved is not None else None for b in range(len(batches))]
    # the main process reads what a stopped call saved (and discards what it cannot use); all follow it
    found = ranks.broadcast({b: texts for b, path in enumerate(paths) if path is not None
                             and (texts := _read_batch(path, keys[b])) is not None} if ranks.main else None)
    todo = [b for b in range(len(batches)) if b not in found]
    model, n_new, seconds = None, 0, 0.0

    def ask(b: int) -> list[str]:
        nonlocal model, n_new, seconds
        batch = [conversations[i] for i in batches[b]]
        if model is None:  # loaded only if some batch is left to answer here
            model = _answerer(cfg, adapter)
        if cfg.generate.backend == "vllm":
            texts, stats = generate_vllm(cfg, tokenizer, batch, model, seed=batch_seed(seed, b), fmt=fmt)
        else:
            texts, stats = generate(model, tokenizer, batch, cfg.generate, seed=batch_seed(seed, b), fmt=fmt,
                                    progress=False)
        n_new, seconds = n_new + stats["new_tokens"], seconds + stats["seconds"]
        return texts

    with progress_bar(unit="prompts") as bar:
        task = bar.add_task(label, total=len(order))
        bar.advance(task, sum(len(batches[b]) for b in found))

        def done(j: int, texts: list[str]) -> None:
            b = todo[j]
            if paths[b] is not None:
                write_parquet(pd.DataFrame({"key": keys[b], "response": texts}), paths[b])
            bar.advance(task, len(texts))

        found.update(zip(todo, ranks.spread([functools.partial(ask, b) for b in todo], done)))
    out: list[str] = [""] * len(conversations)
    for b, idx in enumerate(batches):
        for i, text in zip(idx, found[b]):
            out[i] = text
    again = f"; {len(batches) - len(todo)} batch(es) saved before a stop reused" if len(todo) < len(batches) else ""
    here = f" by this process (1 of {ranks.world})" if ranks.world > 1 else ""
    console.print(f"  {label}: {n_new:,} tokens{here} at {n_new / seconds if seconds else 0:.1f} tokens/s{again}")
    return out


def _answerer(cfg: Config, adapter: Adapter):
    """What answers for `adapter`: the loaded model (backend hf), or the adapter folder to request
    from vLLM, a mix written as one adapter first (None: the base model)."""
    parts = adapter if isinstance(adapter, list) else None
    if cfg.generate.backend == "vllm":
        from paretohqd.policy import vllm

        problems = vllm.check_backend(cfg.generate, lora=cfg.train.lora)
        if problems:
            raise ConfigError(problems[0])
        return vllm.mixed_adapter(cfg.policy, parts) if parts and len(parts) > 1 else \
            Path(parts[0][0]) if parts else adapter
    if parts is not None:
        return load_mixed(cfg.policy, parts, lora=cfg.train.lora, dtype=cfg.generate.dtype)
    return load_for_generation(cfg.policy, adapter, lora=cfg.train.lora, dtype=cfg.generate.dtype)


def generate_vllm(cfg: Config, tokenizer, conversations: list[list[dict]], adapter: Path | None, *, seed: int,
                  fmt: str = "chat") -> tuple[list[str], dict]:
    """`generate` on vLLM (`policy/vllm.py`): one sampled response per conversation, in input order,
    from the base policy with `adapter` (a LoRA folder, or None). Request i samples with its own
    seed, `batch_seed(seed, i)`, so a request's answer does not depend on the others.

    Returns the responses and stats (seconds, new tokens per second).
    """
    from paretohqd.policy.vllm import engine, sampling_kwargs

    t0 = time.perf_counter()
    llm = engine(cfg.policy, cfg.generate, adapter)
    stops = stop_strings(fmt, cfg.generate.stop)
    # as `generate`: the tokenizer's EOS ends an answer too (vLLM adds the model's own)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    # tokenized here, as `generate` does: the same prompt tokens on both backends
    prompts = [prompt_ids(tokenizer, c, fmt) for c in conversations]
    params = [sampling_kwargs(cfg.generate, seed=batch_seed(seed, i), stops=stops, eos=eos)
              for i in range(len(prompts))]
    new = llm.generate(prompts, adapter, params)
    out = [cut_at_stop(text, stops) for text in tokenizer.batch_decode(new, skip_special_tokens=True)]
    n_new, seconds = sum(len(ids) for ids in new), time.perf_counter() - t0
    return out, {"seconds": seconds, "new_tokens": n_new, "tokens_per_s": n_new / seconds if seconds else 0.0}


def _settings(cfg: Config, adapter, fmt: str) -> str:
    """What, besides the prompt and seed, decides an answer: the model and the sampling settings."""
    return json.dumps([cfg.policy.model_dump(mode="json"), cfg.generate.model_dump(mode="json"), str(adapter),
                       cfg.train.lora, fmt], sort_keys=True)


def _key(conversation: list[dict], seed: int, settings: str) -> str:
    text = json.dumps([conversation, seed, settings], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read_batch(path: Path, keys: list[str]) -> list[str] | None:
    """A saved batch's answers if it holds exactly these prompts with these settings, else None."""
    if not path.exists():
        return None
    try:
        df = read_table(path)
        if df["key"].tolist() != keys:
            raise ValueError("made with other prompts or settings")
        return [str(x) for x in df["response"]]
    except (InputError, ValueError, KeyError) as e:
        why = "cannot be read" if isinstance(e, InputError) else str(e)[:160]
        console.print(f"[yellow]warning: discarding saved answers {path} ({why}); answering again[/]")
        path.unlink(missing_ok=True)
        return None
