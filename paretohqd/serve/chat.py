"""POST /v1/chat/completions: one service object that checks a request and queues its job
(`submit`), then produces either kind of answer: `full` (one JSON body) or `stream` (server-sent
events). Stop strings match the raw generated text and end the answer there; the answer returned
is that text stripped of white space at both ends (OpenAI returns it unstripped)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from paretohqd.policy.prompts import prompt_ids, with_tag
from paretohqd.serve.batcher import Batcher, Job
from paretohqd.serve.limits import Limits
from paretohqd.serve.protocol import APIError, ChatRequest

log = logging.getLogger("paretohqd.serve")

POLL = 0.25
"""Seconds between checks that a waiting (non-streaming) client is still connected."""


@dataclass
class Pending:
    """A queued request and what its answer reports."""

    job: Job
    id: str
    model: str
    created: int
    prompt_tokens: int
    deadline: float
    """Event-loop time by which the last token is due (`Limits.timeout`)."""
    include_usage: bool

    def usage(self) -> dict:
        completion = len(self.job.ids)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}


class ChatService:
    """Chat requests, from a validated body to an answer (see the module docstring)."""

    def __init__(self, batcher: Batcher, limits: Limits):
        from transformers import AutoConfig

        from paretohqd.policy.load import load_tokenizer, resolve_policy

        self.batcher, self.models, self.limits = batcher, batcher.models, limits
        policy = self.models.cfg.policy
        # the request side's tokenizer (counting prompt tokens), apart from the worker's, used by
        # one thread of its own: the chat template and tokenizing stay off the event loop
        self.tokenizer = load_tokenizer(policy.model, trust_remote_code=policy.trust_remote_code)
        self._tokenize = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paretohqd-tokenize")
        model_config = AutoConfig.from_pretrained(resolve_policy(policy.model), trust_remote_code=policy.trust_remote_code)
        self.context = getattr(model_config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        self._ids = itertools.count()

    def close(self) -> None:
        self._tokenize.shutdown(wait=False, cancel_futures=True)

    async def submit(self, body: ChatRequest) -> Pending:
        """Check `body` against the run and the limits, and queue its job.

        Raises:
            APIError: 400 (a bad field), 404 (an unknown model), 429 (the queue is full).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.timeout
        name, weights, tag = self.models.resolve(body.model)
        if body.n != 1:
            raise APIError(400, f"n: {body.n} choices asked for; this server answers n=1 only", param="n")
        conversation = [{"role": m.role, "content": m.text()} for m in body.messages]
        if conversation[-1]["role"] != "user":
            raise APIError(400, "messages: the last message is not the user's; end with a user turn", param="messages")
        if tag is not None:
            conversation = with_tag(conversation, tag)
        max_tokens = self._max_tokens(body)
        ids = await loop.run_in_executor(self._tokenize, prompt_ids, self.tokenizer, conversation, self.batcher.fmt)
        if len(ids) + max_tokens > self.context:
            raise APIError(400, f"This model's maximum context length is {self.context} tokens; the prompt has "
                           f"{len(ids)} tokens and max_tokens asks for {max_tokens}, so the prompt may have "
                           f"at most {self.context - max_tokens}; shorten the messages or lower max_tokens",
                           param="messages", code="context_length_exceeded")
        gen = self.models.cfg.generate
        temperature = gen.temperature if body.temperature is None else body.temperature
        top_p = gen.top_p if body.top_p is None else body.top_p
        seed = None if temperature == 0 else body.seed  # greedy answers need none
        job = Job(weights, conversation, (temperature, top_p, max_tokens, body.stops(), seed), loop.create_future(),
                  asyncio.Queue() if body.stream else None,
                  # a sampled request with a seed answers alone, so the same seed gives the same answer
                  alone=None if seed is None else next(self._ids))
        self.batcher.submit(job)
        return Pending(job, f"chatcmpl-{os.getpid()}-{next(self._ids)}", name, int(time.time()), len(ids), deadline,
                       bool((body.stream_options or {}).get("include_usage")))

    def _max_tokens(self, body: ChatRequest) -> int:
        """The tokens `body` may generate: what it asks for, or the run's default, within the cap."""
        cap, asked = self.limits.max_tokens, body.max_completion_tokens or body.max_tokens
        if asked is None:
            return min(self.models.cfg.generate.max_new_tokens, cap)
        if asked > cap:
            field = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
            raise APIError(400, f"{field}: {asked} tokens asked for; this server generates at most {cap} per "
                           f"request (paretohqd serve --max-tokens); ask for fewer", param=field,
                           code="max_tokens_exceeded")
        return asked

    async def full(self, p: Pending, disconnected) -> dict:
        """The whole answer as one chat.completion body.

        Args:
            disconnected: an async callable, True once the client has gone (its row then ends).

        Raises:
            APIError: 504 past the timeout; 499 when the client left.
        """
        job, loop = p.job, asyncio.get_running_loop()
        while not job.future.done():
            left = p.deadline - loop.time()
            if left <= 0:
                raise self._timed_out(job)
            await asyncio.wait([job.future], timeout=min(POLL, left))
            if not job.future.done() and await disconnected():
                self.batcher.cancel(job)
                raise APIError(499, "the client closed the connection before its answer", code="client_closed")
        answer = job.future.result()
        return {"id": p.id, "object": "chat.completion", "created": p.created, "model": p.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": job.finish, "logprobs": None}], "usage": p.usage()}

    async def stream(self, p: Pending, request_id: str) -> AsyncIterator[str]:
        """The answer as server-sent events: chat.completion.chunk pieces, then [DONE]. An error or
        the timeout after the first event is the last event, an OpenAI error body."""
        job, loop = p.job, asyncio.get_running_loop()
        try:
            yield self._event(p, {"role": "assistant", "content": ""})
            while True:
                left = p.deadline - loop.time()
                try:
                    piece = await asyncio.wait_for(job.stream.get(), timeout=max(left, 0))
                except TimeoutError:
                    yield _error_event(self._timed_out(job))
                    return
                if piece is None:
                    break
                if piece:
                    yield self._event(p, {"content": piece})
            try:
                await job.future
            except Exception:  # noqa: BLE001 - the stream has begun: the error is its last event
                log.exception("internal error, request %s", request_id)
                yield _error_event(internal_error(request_id))
                return
            yield self._event(p, {}, job.finish)
            if p.include_usage:
                yield self._event(p, None, usage=p.usage())
            yield "data: [DONE]\n\n"
        finally:
            self.batcher.cancel(job)  # after the end, or when the client went away: its row ends

    def _timed_out(self, job: Job) -> APIError:
        self.batcher.cancel(job)
        return APIError(504, f"the answer took longer than {self.limits.timeout:g} s (paretohqd serve --timeout); "
                        "ask for fewer tokens or retry when the server is less busy", type="timeout", code="timeout")

    @staticmethod
    def _event(p: Pending, delta: dict | None, finish: str | None = None, *, usage: dict | None = None) -> str:
        chunk = {"id": p.id, "object": "chat.completion.chunk", "created": p.created, "model": p.model,
                 "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish,
                                                       "logprobs": None}]}
        if usage is not None:
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk)}\n\n"


def internal_error(request_id: str) -> APIError:
    """What a client is told of a failure: a request id to find the details in the server's log."""
    return APIError(500, f"internal error (request id {request_id}); the server log has the details",
                    type="server_error")


def _error_event(e: APIError) -> str:
    return f"data: {json.dumps({'error': {'message': e.message, 'type': e.type, 'param': e.param, 'code': e.code}})}\n\n"
