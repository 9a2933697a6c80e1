"""The bounded queue, the dispatcher task that forms batches, and the one worker thread that
generates them (see `paretohqd.serve`)."""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from paretohqd.serve.limits import Limits
from paretohqd.serve.models import Models
from paretohqd.serve.protocol import APIError

log = logging.getLogger("paretohqd.serve")

KEEP_BATCHES = 10_000
"""Batch sizes remembered (`Batcher.batches`)."""


@dataclass(eq=False)
class Job:
    """One chat request waiting for (or in) a batch."""

    weights: tuple | str
    """What to load: `base`, or ((adapter folder, lambda), ...)."""
    conversation: list[dict]
    """The messages, RiC's tag added."""
    sampling: tuple
    """(temperature, top_p, max_tokens, stops, seed): jobs with equal weights and sampling share a batch."""
    future: asyncio.Future
    stream: asyncio.Queue | None = None
    """Streamed text pieces (None: not streaming); the dispatcher ends them with None."""
    alone: int | None = None
    """Set (unique) for a job that must not share its batch."""
    ids: list[int] = field(default_factory=list)
    """The tokens generated for it (EOS and padding left out)."""
    ended: bool = False
    """It generated EOS, or its row left the batch."""
    finish: str = "stop"
    """OpenAI's finish_reason: `stop` (EOS or a stop string) or `length` (max_tokens reached)."""
    sent: str = ""
    """The text streamed so far (always a prefix of the final answer)."""
    cancelled: bool = False
    """The client went away (or its time ran out): skipped if not yet started, its row ended if started."""


class Batcher:
    """The queue, the dispatcher task and the one worker thread (see the package docstring)."""

    def __init__(self, models: Models, *, window: float = 0.03, limits: Limits = Limits()):
        from paretohqd.policy.load import load_tokenizer
        from paretohqd.policy.prompts import resolve_format

        self.models, self.window, self.limits = models, window, limits
        cfg = models.cfg
        # the worker's own tokenizer: a fast tokenizer is not safe to use from two threads at once
        self.tokenizer = load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code)
        self.fmt = resolve_format(self.tokenizer, cfg.policy.prompt_format)
        self.pending: deque[Job] = deque()
        """Jobs waiting for a batch, oldest first (at most limits.max_queue)."""
        self._arrived = asyncio.Event()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paretohqd-generate")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.batches: list[int] = []
        """The sizes of the batches generated, the last `KEEP_BATCHES` (for tests and the benchmark)."""
        self.dropped = 0
        """Rows ended before their answer was done because their client left or timed out."""
        self._seconds = 1.0  # the last batch's wall time: a busy client's Retry-After

    def submit(self, job: Job) -> None:
        """Queue `job` for the next batch that has room for it.

        Raises:
            APIError: 429 (with Retry-After) when `limits.max_queue` jobs are waiting.
        """
        if len(self.pending) >= self.limits.max_queue:
            wait = max(1, math.ceil(self._seconds))
            raise APIError(429, f"The server is busy: {len(self.pending)} requests are waiting (paretohqd serve "
                           f"--max-queue {self.limits.max_queue}); retry after {wait} s",
                           type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": str(wait)})
        self.pending.append(job)
        self._arrived.set()

    def cancel(self, job: Job) -> None:
        """The client of `job` is gone: out of the queue, or its row ends at the next token."""
        job.cancelled = True
        if job in self.pending:
            self.pending.remove(job)

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        while True:
            await self._gather()
            groups: dict[tuple, list[Job]] = {}
            for job in self._take():
                # a LoRA run answers every preference with one model; otherwise one model each
                model = None if self.models.cfg.train.lora else job.weights
                groups.setdefault((model, job.sampling, job.alone), []).append(job)
            for group in groups.values():
                await self._answer(group)

    async def _gather(self) -> None:
        """Wait for a job, then for the requests sent with it: while they keep coming, up to four
        windows (a lone request waits one)."""
        while not self.pending:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self.loop.time() + 4 * self.window
        while True:
            before = len(self.pending)
            await asyncio.sleep(self.window)
            if len(self.pending) == before or self.loop.time() >= deadline:
                return

    def _take(self) -> list[Job]:
        """The next batch: oldest first, at most `limits.max_batch` jobs needing at most `cache_size`
        mixes (without LoRA: models) between them; the others stay queued, in order, for a later batch."""
        taken, slots, rest = [], set(), deque()
        while self.pending:
            job = self.pending.popleft()
            slot = self.models.slot(job.weights)
            full = slot is not None and slot not in slots and len(slots) >= self.models.cache_size
            if len(taken) >= self.limits.max_batch or full:
                rest.append(job)
                continue
            if slot is not None:
                slots.add(slot)
            taken.append(job)
        self.pending = rest
        return taken

    async def _answer(self, group: list[Job]) -> None:
        """Generate `group` in the worker thread; hand each job its answer (or the error)."""
        group = [job for job in group if not job.cancelled]
        if not group:
            return
        t0 = time.perf_counter()
        try:
            answers = await self.loop.run_in_executor(self.worker, self._generate, group)
        except Exception as e:  # noqa: BLE001 - the requests get it, the server goes on
            log.exception("generation failed")
            for job in group:
                if not job.future.done():
                    job.future.set_exception(e)
                if job.stream is not None:
                    job.stream.put_nowait(None)
            return
        finally:
            self._seconds = time.perf_counter() - t0
        for job, text in zip(group, answers):
            if job.stream is not None:
                # what the stream held back (a possible stop string, trailing space) comes now
                if text.startswith(job.sent):
                    job.stream.put_nowait(text[len(job.sent):])
                elif not job.cancelled:
                    log.warning("streamed text %r is not a prefix of the answer %r", job.sent, text)
                job.stream.put_nowait(None)
            if not job.future.done():
                job.future.set_result(text)

    def _generate(self, group: list[Job]) -> list[str]:
        """One `generate` call for a group of jobs with the same sampling (and, without LoRA, weights);
        worker thread."""
        from paretohqd.policy.generate import generate
        from paretohqd.policy.prompts import stop_strings

        temperature, top_p, max_tokens, stops, seed = group[0].sampling
        cfg = self.models.cfg.generate.model_copy(update={
            "temperature": temperature, "top_p": top_p, "max_new_tokens": max_tokens, "stop": list(stops),
            "batch_size": len(group)})
        model, adapters = self.models.get([job.weights for job in group])
        stops_all = stop_strings(self.fmt, list(stops))
        self.batches.append(len(group))
        del self.batches[:-KEEP_BATCHES]
        responses, _ = generate(model, self.tokenizer, [job.conversation for job in group], cfg,
                                seed=secrets.randbelow(2**31) if seed is None else seed, fmt=self.fmt,
                                on_tokens=self._on_tokens(group, model, stops_all), progress=False, adapters=adapters)
        for job in group:
            # a row that neither ended (EOS) nor met a stop string ran into max_tokens
            stopped = any(s in self.tokenizer.decode(job.ids, skip_special_tokens=True) for s in stops_all)
            job.finish = "stop" if job.ended or stopped else "length"
        return responses

    def _on_tokens(self, group: list[Job], model, stops: list[str]):
        """Count each job's tokens and, for streaming jobs, send the text that can no longer change;
        the rows whose client has gone leave the batch."""
        eos = model.generation_config.eos_token_id
        ends = {*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        hold = max((len(s) for s in stops), default=1) - 1  # a stop string may be arriving

        def on_tokens(indices: list[int], tokens: list[int]) -> set[int]:
            gone = set()
            for i, token in zip(indices, tokens):
                job = group[i]
                if job.ended:
                    continue
                if job.cancelled:  # its row leaves the batch now: no more work for no one
                    job.ended, self.dropped = True, self.dropped + 1
                    gone.add(i)
                    continue
                if token in ends:  # a finished row gets the pad token from here on
                    job.ended = True
                    continue
                job.ids.append(token)
                if job.stream is not None:
                    self._send(job, stops, hold)
            return gone

        return on_tokens

    def _send(self, job: Job, stops: list[str], hold: int) -> None:
        """Stream the part of `job`'s text that no later token can change."""
        text = self.tokenizer.decode(job.ids, skip_special_tokens=True).lstrip()
        cuts = [k for k in (text.find(s) for s in stops) if k >= 0]
        safe = text[:min(cuts)] if cuts else text[:len(text) - hold]
        # half a UTF-8 character decodes as U+FFFD; the final answer is stripped
        safe = safe.rstrip("\ufffd").rstrip()
        if len(safe) > len(job.sent) and safe.startswith(job.sent):
            piece, job.sent = safe[len(job.sent):], safe
            self.loop.call_soon_threadsafe(job.stream.put_nowait, piece)
