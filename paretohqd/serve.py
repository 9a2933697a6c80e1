"""`paretohqd serve RUN`: a trained run's models behind an OpenAI-compatible HTTP API (FastAPI +
uvicorn): `GET /v1/models` and `POST /v1/chat/completions` (with `stream: true`).

Models: `pref-XX` (each trained preference), `base` (the policy before training) and any other
preference as `w=0.3,0.7`, which gets what `paretohqd.load` gives it: the trained model on the
grid, the exact mix of the trained models around it otherwise, RiC's tag for RiC.

A LoRA run is served by one model: the base with every trained adapter loaded unmerged, and each
mix asked for added as one more adapter (PEFT's `cat` combination, exact; the last `cache_size`
mixes used are kept). One batch can then hold requests for different preferences, each row with
its own adapter (PEFT's mixed-adapter batches, as vLLM serves LoRA adapters). Without LoRA, each
preference is its own merged model (the last `cache_size` used are kept) and batches are per model.

Batching: every request becomes a job on an asyncio queue. One dispatcher task takes the first
job, waits `window` seconds for the requests sent with it (again while more keep arriving, up to
four windows), takes everything queued, groups the jobs by sampling settings (and, without LoRA,
by model), and hands each group to one worker thread as one `generate` call. The event loop only awaits that thread, so it keeps taking
requests while the worker generates; they queue and form the next batch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from paretohqd.io import InputError
from paretohqd.use import choose, open_run

log = logging.getLogger("paretohqd.serve")

BASE = "base"
"""The model name of the policy before training."""
MAX_BATCH = 64
"""The most requests one generate batch holds (more queued together run as several)."""
KEEP_BATCHES = 10_000
"""Batch sizes remembered (`Batcher.batches`)."""


class APIError(Exception):
    """An OpenAI-style error: HTTP status, one-line message, the request field it is about."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type


def error_response(status: int, message: str, *, param=None, code=None, type="invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}}, status_code=status)


# Request bodies ----------------------------------------------------------------------------------


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(BaseModel):
    # OpenAI's clients send fields this server has no use for (user, metadata, ...): ignore them
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    stream_options: dict | None = None


# Jobs --------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One chat request waiting for (or in) a batch."""

    weights: tuple
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
    """It generated EOS."""
    finish: str = "stop"
    """OpenAI's finish_reason: `stop` (EOS or a stop string) or `length` (max_tokens reached)."""
    sent: str = ""
    """The text streamed so far (always a prefix of the final answer)."""
    cancelled: bool = False
    """The client went away: skip it if not yet started, stop decoding its text if started."""


class Models:
    """A run's names and the weights behind them, and an LRU cache of loaded models."""

    def __init__(self, run: str | Path, *, cache_size: int = 4, dtype: str | None = None, trust_remote_code: bool = False):
        self.run, self.cache_size = Path(run), cache_size
        self.r, self.cfg, self.finals = open_run(run, trust_remote_code=trust_remote_code)
        self.dtype = dtype or self.cfg.generate.dtype
        self.names = [m.model for m in self.finals] + [BASE]
        self._cache: OrderedDict[tuple | str, object] = OrderedDict()
        """Without LoRA: weights -> merged model; with LoRA: mixed weights -> adapter name."""
        self._model, self._names, self._mixes = None, {}, itertools.count()

    def resolve(self, name: str) -> tuple[str, tuple | str, str | None]:
        """A request's `model` as (the name answers report, the weights to load, RiC's tag or None).

        Raises:
            APIError: 404 for an unknown name, 400 for bad `w=` weights.
        """
        if name == BASE:
            return BASE, BASE, None
        if name.startswith("w="):
            try:
                choice = choose(self.r, self.finals, name[2:])
            except InputError as e:
                raise APIError(400, f"model {name!r}: {e}", param="model", code="invalid_weights") from None
        else:
            known = {m.model: m for m in self.finals}
            if name not in known:
                raise APIError(404, f"The model {name!r} does not exist; this run serves {', '.join(self.names)}, "
                               f"or any preference as w=W1,W2,... (objectives {', '.join(self.r.objectives)})",
                               param="model", code="model_not_found")
            choice = choose(self.r, self.finals, known[name].weights)
        weights = tuple((str(m.adapter), float(lam)) for m, lam in choice.parts)
        return choice.name, weights, choice.tag

    def get(self, weights: list[tuple | str]) -> tuple[object, list[str] | None]:
        """The model that answers every one of `weights` (worker thread only), and with a LoRA run
        each one's adapter name.

        A LoRA run is one model: the base with every trained adapter, and the mixes asked for
        added as adapters (the last `cache_size` used are kept), so rows of one batch can use
        different preferences. Without LoRA, one merged model per preference (the last
        `cache_size` used are kept), and `weights` must all be the same.
        """
        if self.cfg.train.lora:
            return self._shared(), [self._adapter(w, keep=set(weights)) for w in weights]
        from paretohqd.policy.generate import load_for_generation, load_mixed

        (key,) = set(weights)
        if key not in self._cache:
            if key == BASE:
                self._cache[key] = load_for_generation(self.cfg.policy, None, lora=False, dtype=self.dtype)
            else:  # what paretohqd.load does with the choice, without reopening the run or the tokenizer
                self._cache[key] = load_mixed(self.cfg.policy, [(Path(a), lam) for a, lam in key], lora=False,
                                              dtype=self.dtype)
        self._evict(keep={key})
        return self._cache[key], None

    def _shared(self):
        from paretohqd.policy.generate import load_adapters

        if self._model is None:
            folders = dict.fromkeys(str(m.adapter) for m in self.finals)  # RiC: one folder for all
            self._names = {folder: f"trained-{i}" for i, folder in enumerate(folders)}
            self._model = load_adapters(self.cfg.policy, {n: f for f, n in self._names.items()}, dtype=self.dtype)
        return self._model

    def _adapter(self, weights: tuple | str, keep: set) -> str:
        from paretohqd.policy.generate import add_mix

        if weights == BASE:
            return "__base__"  # PEFT's name for no adapter
        if len(weights) == 1:
            return self._names[weights[0][0]]
        if weights not in self._cache:
            name = f"mix-{next(self._mixes)}"
            add_mix(self._model, [(self._names[a], lam) for a, lam in weights], name)
            self._cache[weights] = name
        self._evict(keep)
        return self._cache[weights]

    def _evict(self, keep: set) -> None:
        """Forget the least recently used beyond `cache_size`, except those in `keep` (this batch)."""
        for key in keep:
            if key in self._cache:
                self._cache.move_to_end(key)
        for key in [k for k in self._cache if k not in keep][:max(0, len(self._cache) - self.cache_size)]:
            gone = self._cache.pop(key)
            if self.cfg.train.lora:
                self._model.delete_adapter(gone)


class Batcher:
    """The queue, the dispatcher task and the one worker thread (see the module docstring)."""

    def __init__(self, models: Models, *, window: float = 0.03):
        from paretohqd.policy.load import load_tokenizer
        from paretohqd.policy.prompts import resolve_format

        self.models, self.window = models, window
        cfg = models.cfg
        # the worker's own tokenizer: a fast tokenizer is not safe to use from two threads at once
        self.tokenizer = load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code)
        self.fmt = resolve_format(self.tokenizer, cfg.policy.prompt_format)
        self.queue: asyncio.Queue[Job] = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paretohqd-generate")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.batches: list[int] = []
        """The sizes of the batches generated, the last `KEEP_BATCHES` (for tests and the benchmark)."""

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            # let the requests sent together arrive: wait while they keep coming, up to 4 windows
            # (a lone request waits one)
            deadline = self.loop.time() + 4 * self.window
            while True:
                await asyncio.sleep(self.window)
                arrived = 0
                while not self.queue.empty():
                    jobs.append(self.queue.get_nowait())
                    arrived += 1
                if not arrived or self.loop.time() >= deadline:
                    break
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:
                if not job.cancelled:
                    # a LoRA run answers every preference with one model; otherwise one model each
                    model = None if self.models.cfg.train.lora else job.weights
                    groups.setdefault((model, job.sampling, job.alone), []).append(job)
            for group in groups.values():
                try:
                    answers = await self.loop.run_in_executor(self.worker, self._generate, group)
                except Exception as e:  # noqa: BLE001 - the requests get it, the server goes on
                    log.exception("generation failed")
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(e)
                        if job.stream is not None:
                            job.stream.put_nowait(None)
                    continue
                for job, text in zip(group, answers):
                    if job.stream is not None:
                        # what the stream held back (a possible stop string, trailing space) comes now
                        if text.startswith(job.sent):
                            job.stream.put_nowait(text[len(job.sent):])
                        else:
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
            "batch_size": min(len(group), MAX_BATCH)})
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
        """Count each job's tokens and, for streaming jobs, send the text that can no longer change."""
        eos = model.generation_config.eos_token_id
        ends = {*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        hold = max((len(s) for s in stops), default=1) - 1  # a stop string may be arriving

        def on_tokens(indices: list[int], tokens: list[int]) -> None:
            for i, token in zip(indices, tokens):
                job = group[i]
                if job.ended:
                    continue
                if token in ends:  # a finished row gets the pad token from here on
                    job.ended = True
                    continue
                job.ids.append(token)
                if job.stream is None or job.cancelled:
                    continue
                text = self.tokenizer.decode(job.ids, skip_special_tokens=True).lstrip()
                cuts = [k for k in (text.find(s) for s in stops) if k >= 0]
                safe = text[:min(cuts)] if cuts else text[:len(text) - hold]
                # half a UTF-8 character decodes as U+FFFD; the final answer is stripped
                safe = safe.rstrip("\ufffd").rstrip()
                if len(safe) > len(job.sent) and safe.startswith(job.sent):
                    piece, job.sent = safe[len(job.sent):], safe
                    self.loop.call_soon_threadsafe(job.stream.put_nowait, piece)

        return on_tokens


# The app -----------------------------------------------------------------------------------------


def create_app(run: str | Path, *, api_key: str | None = None, cache_size: int = 4, window: float = 0.03,
               dtype: str | None = None, trust_remote_code: bool = False) -> FastAPI:
    """The FastAPI app serving `run` (a finished run folder).

    Raises:
        InputError: not a finished run.
    """
    from transformers import AutoConfig

    from paretohqd.policy.load import load_tokenizer, resolve_policy
    from paretohqd.policy.prompts import prompt_ids, with_tag

    models = Models(run, cache_size=cache_size, dtype=dtype, trust_remote_code=trust_remote_code)
    cfg = models.cfg
    # the request side's tokenizer (counting prompt tokens), apart from the worker's
    tokenizer = load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code)
    model_config = AutoConfig.from_pretrained(resolve_policy(cfg.policy.model), trust_remote_code=cfg.policy.trust_remote_code)
    context = getattr(model_config, "max_position_embeddings", None) or tokenizer.model_max_length
    created = int(time.time())
    ids = itertools.count()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = Batcher(models, window=window)
        app.state.batcher = batcher
        task = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            task.cancel()
            batcher.worker.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="paretohqd serve", lifespan=lifespan)
    app.state.models = models

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return error_response(e.status, e.message, param=e.param, code=e.code, type=e.type)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"] if x != "body") or "body"
        return error_response(400, f"{where}: {first['msg']}", param=where, code="invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return error_response(e.status_code, str(e.detail), code=None)

    @app.middleware("http")
    async def key_and_last_resort(request: Request, call_next):
        if api_key is not None:
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return error_response(401, "Incorrect API key provided; send it as the header "
                                      "'Authorization: Bearer KEY' (the key given to paretohqd serve --api-key)",
                                      code="invalid_api_key")
        try:
            return await call_next(request)
        except Exception as e:  # noqa: BLE001 - the client gets one JSON line; the log gets the traceback
            # answered here rather than by an exception handler, which would re-raise it to uvicorn
            # and so close the client's keep-alive connection
            log.exception("internal error")
            message = " ".join(str(e).split()) or type(e).__name__
            return error_response(500, f"internal error: {type(e).__name__}: {message}", type="server_error")

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "paretohqd"}
                                           for name in models.names]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        name, weights, tag = models.resolve(body.model)
        if body.n != 1:
            raise APIError(400, f"n: {body.n} choices asked for; this server answers n=1 only", param="n")
        conversation = [{"role": m.role, "content": m.text()} for m in body.messages]
        if conversation[-1]["role"] != "user":
            raise APIError(400, "messages: the last message is not the user's; end with a user turn", param="messages")
        if tag is not None:
            conversation = with_tag(conversation, tag)
        gen = cfg.generate
        max_tokens = body.max_completion_tokens or body.max_tokens or gen.max_new_tokens
        prompt_tokens = len(prompt_ids(tokenizer, conversation, app.state.batcher.fmt))
        if prompt_tokens + max_tokens > context:
            raise APIError(400, f"This model's maximum context length is {context} tokens; the prompt has "
                           f"{prompt_tokens} tokens and max_tokens asks for {max_tokens}, so the prompt may have "
                           f"at most {context - max_tokens}; shorten the messages or lower max_tokens",
                           param="messages", code="context_length_exceeded")
        temperature = gen.temperature if body.temperature is None else body.temperature
        stops = tuple([body.stop] if isinstance(body.stop, str) else body.stop or [])
        top_p = gen.top_p if body.top_p is None else body.top_p
        seed = None if temperature == 0 else body.seed  # greedy answers need none
        loop = asyncio.get_running_loop()
        job = Job(weights, conversation, (temperature, top_p, max_tokens, stops, seed), loop.create_future(),
                  asyncio.Queue() if body.stream else None,
                  # a sampled request with a seed answers alone, so the same seed gives the same answer
                  alone=None if seed is None else next(ids))
        await app.state.batcher.queue.put(job)
        rid, now = f"chatcmpl-{os.getpid()}-{next(ids)}", int(time.time())

        def usage(answer: str) -> tuple[dict, str]:
            completion = len(job.ids)
            return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                    "total_tokens": prompt_tokens + completion}, job.finish

        if not body.stream:
            answer = await job.future
            counts, finish = usage(answer)
            return {"id": rid, "object": "chat.completion", "created": now, "model": name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                 "finish_reason": finish, "logprobs": None}], "usage": counts}

        include_usage = bool((body.stream_options or {}).get("include_usage"))

        def event(delta: dict, finish: str | None = None, usage_counts: dict | None = None) -> str:
            import json

            chunk = {"id": rid, "object": "chat.completion.chunk", "created": now, "model": name,
                     "choices": [] if usage_counts else [{"index": 0, "delta": delta, "finish_reason": finish,
                                                          "logprobs": None}]}
            if usage_counts:
                chunk["usage"] = usage_counts
            return f"data: {json.dumps(chunk)}\n\n"

        async def events():
            import json

            try:
                yield event({"role": "assistant", "content": ""})
                while (piece := await job.stream.get()) is not None:
                    if piece:
                        yield event({"content": piece})
                try:
                    answer = await job.future
                except Exception as e:  # noqa: BLE001 - the stream has begun: the error is its last event
                    error = {"message": f"internal error: {type(e).__name__}: {' '.join(str(e).split())}",
                             "type": "server_error", "param": None, "code": None}
                    yield f"data: {json.dumps({'error': error})}\n\n"
                    return
                counts, finish = usage(answer)
                yield event({}, finish)
                if include_usage:
                    yield event({}, usage_counts=counts)
                yield "data: [DONE]\n\n"
            finally:
                job.cancelled = True  # after the end, or when the client went away: stop decoding for it

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def serve(run: str | Path, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          cache_size: int = 4, window: float = 0.03, trust_remote_code: bool = False) -> None:
    """Serve `run` until interrupted (uvicorn)."""
    import uvicorn

    from paretohqd.progress import console

    app = create_app(run, api_key=api_key, cache_size=cache_size, window=window, trust_remote_code=trust_remote_code)
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        console.print(f"[yellow]warning: serving on {host} without --api-key: anyone who reaches this port can use it[/]")
    uvicorn.run(app, host=host, port=port, log_level="info")


class Running:
    """A server in a background thread of this process (tests, the benchmark): `with Running(app) as
    port:` starts uvicorn on a free loopback port and stops it on exit."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1"):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="paretohqd-serve", daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self.server.servers[0].sockets[0].getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
