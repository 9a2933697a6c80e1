"""The FastAPI app: the routes (which only hand over to `ChatService`), the guards every request
passes (body size, Host, API key, a last resort for failures) and `serve`, which runs it."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from paretohqd.io import InputError
from paretohqd.serve.batcher import Batcher
from paretohqd.serve.chat import ChatService, internal_error
from paretohqd.serve.limits import Limits
from paretohqd.serve.models import Models
from paretohqd.serve.protocol import APIError, ChatRequest, error_response

log = logging.getLogger("paretohqd.serve")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
"""Hosts only this machine reaches: the ones a keyless server may bind."""
EMPTY_KEY = "--api-key is empty; give a key, or leave --api-key out to serve keyless on this machine only"


def create_app(run: str | Path, *, api_key: str | None = None, cache_size: int = 4, window: float = 0.03,
               dtype: str | None = None, limits: Limits | None = None, trust_remote_code: bool = False) -> FastAPI:
    """The FastAPI app serving `run` (a finished run folder).

    Args:
        api_key: required as 'Authorization: Bearer KEY' (None: none, and then only requests whose
            Host header names this machine are answered: a defence against DNS rebinding).
        limits: the server's bounds (default `Limits()`).
        trust_remote_code: consent to a run whose config trusts remote code (`open_run`).

    Raises:
        InputError: not a finished run (or one trusting remote code without consent), or an empty api_key.
    """
    if api_key == "":
        raise InputError(EMPTY_KEY)
    limits = limits or Limits()
    models = Models(run, cache_size=cache_size, dtype=dtype, trust_remote_code=trust_remote_code)
    batcher = Batcher(models, window=window, limits=limits)
    service = ChatService(batcher, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            task.cancel()
            batcher.worker.shutdown(wait=False, cancel_futures=True)
            service.close()

    app = FastAPI(title="paretohqd serve", lifespan=lifespan)
    app.state.models, app.state.batcher, app.state.chat = models, batcher, service
    _errors(app)
    app.add_middleware(Guard, api_key=api_key, max_body=limits.max_body)
    created = int(time.time())

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "paretohqd"}
                                           for name in models.names]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        pending = await service.submit(body)
        if body.stream:
            return StreamingResponse(service.stream(pending, request.state.request_id), media_type="text/event-stream")
        return await service.full(pending, request.is_disconnected)

    return app


def _errors(app: FastAPI) -> None:
    """Every error a client gets has OpenAI's shape."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"] if x != "body") or "body"
        return error_response(400, f"{where}: {first['msg']}", param=where, code="invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return error_response(e.status_code, str(e.detail), code="request_too_large" if e.status_code == 413 else None)


def _local_host(request: Request) -> bool:
    """The Host header names this machine (and this server's port): what a page of another site
    that got its name resolved to 127.0.0.1 (DNS rebinding) cannot send."""
    host = request.headers.get("host", "")
    if host.startswith("["):  # an IPv6 address: [::1]:8000
        name, _, port = host[1:].partition("]")
        port = port.removeprefix(":")
    else:
        name, _, port = host.partition(":")
    port = port or "80"  # none given: the HTTP default
    server = request.scope.get("server")
    return name.lower() in LOOPBACK and (server is None or port == str(server[1]))


class Guard:
    """ASGI middleware every request passes: it gets a request id; the API key is checked (keyless:
    the Host header must name this machine); a body over `max_body` bytes is a 413, whether it
    announces its length or comes in chunks, before more of it is read; and a failure is a 500
    saying the request id, its detail in the log. Plain ASGI, not `@app.middleware`: Starlette's
    BaseHTTPMiddleware hides a client's disconnect from the route, which must see it."""

    def __init__(self, app, *, api_key: str | None, max_body: int):
        self.app, self.api_key, self.max_body = app, api_key, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope.setdefault("state", {})["request_id"] = rid = f"req-{secrets.token_hex(6)}"
        refused = self._refuse(Request(scope))
        if refused is not None:
            return await refused(scope, receive, send)
        started = False

        async def sending(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, self._bounded(scope, receive), sending)
        except Exception:  # noqa: BLE001 - the client gets one JSON line; the log gets the traceback
            log.exception("internal error, request %s", rid)
            if not started:  # answered here, not re-raised: uvicorn would close the keep-alive connection
                await internal_error(rid).response()(scope, receive, send)

    def _refuse(self, request: Request) -> JSONResponse | None:
        if self.api_key is not None:
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
                return error_response(401, "Incorrect API key provided; send it as the header "
                                      "'Authorization: Bearer KEY' (the key given to paretohqd serve --api-key)",
                                      code="invalid_api_key")
        elif not _local_host(request):
            return error_response(421, f"Host {request.headers.get('host')!r} is not this server: a keyless server "
                                  "answers requests to localhost, 127.0.0.1 or [::1] with its port only; use one "
                                  "of those (or serve with --api-key)", code="invalid_host")
        return None

    def _bounded(self, scope, receive):
        declared = dict(scope["headers"]).get(b"content-length", b"")
        seen = 0

        async def bounded():
            nonlocal seen
            if declared.isdigit() and int(declared) > self.max_body:
                raise self._too_large()
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise self._too_large()
            return message

        return bounded

    def _too_large(self) -> HTTPException:
        # FastAPI passes an HTTPException raised while it reads the body on to the handlers
        return HTTPException(413, f"the request body is larger than {self.max_body:,} bytes (paretohqd serve "
                             "--max-body); send fewer or shorter messages")


def check_bind(host: str, api_key: str | None) -> None:
    """A keyless server binds this machine only.

    Raises:
        InputError: an empty key, or no key for a host other machines reach.
    """
    if api_key == "":
        raise InputError(EMPTY_KEY)
    if host not in LOOPBACK and api_key is None:
        raise InputError(f"--host {host} without --api-key: anyone who reaches this port could use it; give "
                         f"--api-key KEY (or PARETOHQD_API_KEY), or bind 127.0.0.1")


def serve(run: str | Path, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          cache_size: int = 4, window: float = 0.03, limits: Limits | None = None,
          trust_remote_code: bool = False) -> None:
    """Serve `run` until interrupted (uvicorn).

    Raises:
        InputError: see `check_bind` and `create_app`.
    """
    import uvicorn

    check_bind(host, api_key)
    app = create_app(run, api_key=api_key, cache_size=cache_size, window=window, limits=limits,
                     trust_remote_code=trust_remote_code)
    uvicorn.run(app, host=host, port=port, log_level="info")
