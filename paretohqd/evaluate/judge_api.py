"""Asking an OpenAI-compatible judge (`/v1/chat/completions`): one verdict per request, with
retries, over `httpx2` (the HTTP client the `openai` package itself uses; no SDK needed).

A request that times out, cannot connect or gets 429 / 5xx is retried after the server's
Retry-After, else after `backoff` seconds doubling; after `retries` retries the judge is
unavailable (`JudgeUnavailable`: the caller stops, keeping what it has). A 401 / 403 / 404 means
the key or the model is wrong: unavailable at once. A reply without a verdict (or a 400 / 413 / 422,
which one request's size or content can cause) is asked once more, then counted as invalid.
The API key goes into the Authorization header only: no message here holds it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import re
from dataclasses import dataclass

import httpx2 as httpx

from paretohqd.config import JudgeConfig
from paretohqd.io import InputError

VERDICTS = ("A", "B", "tie")
"""What a judge may answer; anything else is `INVALID`."""
INVALID = "invalid"
"""The verdict of a reply that held none, twice."""
_MAX_WAIT = 600.0  # seconds: a Retry-After longer than this is a server asking us to go away
_LABELLED = re.compile(r"verdict\W*(?:is\W*)?(a|b|tie)\b", re.IGNORECASE)
_BARE = re.compile(r"^\W*(a|b|tie)\W*$", re.IGNORECASE)  # "A", "[[B]]", "Tie."
_PER_REQUEST = (400, 413, 422)  # this request's fault (too long, refused content): malformed, not fatal
_FATAL = (401, 403, 404)


class JudgeUnavailable(InputError):
    """The judge cannot answer: unreachable, refusing the key or model, or failing past the retries."""


def parse_verdict(reply: str) -> str | None:
    """The verdict in a judge's reply: the last `Verdict: X` line (any case, any punctuation), or
    a reply that is only A, B or tie; None when there is none.

    Examples:
        >>> [parse_verdict(r) for r in ["Verdict: A", "B is wordier.\\n**Verdict:** b", "[[TIE]]", "A or B?"]]
        ['A', 'B', 'tie', None]
    """
    hits = _LABELLED.findall(reply)
    found = hits[-1] if hits else (m.group(1) if (m := _BARE.match(reply.strip())) else None)
    return None if found is None else {"a": "A", "b": "B", "tie": "tie"}[found.lower()]


def chat_url(endpoint: str) -> str:
    """The chat-completions URL of an endpoint given as a base URL (`.../v1`), a bare host (then
    `/v1` is added) or the full URL.

    Raises:
        InputError: not an http(s) URL with a host.

    Examples:
        >>> chat_url("http://127.0.0.1:8000/v1/"), chat_url("https://api.example.com")
        ('http://127.0.0.1:8000/v1/chat/completions', 'https://api.example.com/v1/chat/completions')
    """
    try:
        url = httpx.URL(endpoint)
        ok = url.scheme in ("http", "https") and bool(url.host)
    except Exception:  # httpx2 raises its InvalidURL or a ValueError by case
        ok = False
    if not ok:
        raise InputError(f"--endpoint {endpoint!r} (evaluate.judge.endpoint): not an http(s) URL; give the "
                         "judge's base URL, e.g. http://127.0.0.1:8000/v1 or https://api.openai.com/v1")
    path = url.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path = (path or "/v1") + "/chat/completions"
    return str(url.copy_with(path=path))


def shown_url(url: str) -> str:
    """The URL as written to files and messages: no user, password or query (where keys hide).

    Examples:
        >>> shown_url("https://user:secret@host/v1/chat/completions?key=abc")
        'https://host/v1/chat/completions'
    """
    return str(httpx.URL(url).copy_with(username=None, password=None, query=None))


@dataclass
class Reply:
    """One verdict and what it cost."""

    verdict: str
    """A, B, tie or `INVALID`."""
    text: str
    """The judge's last reply (or the HTTP error that stood for it)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    """HTTP requests sent for it, retries included."""


@dataclass
class Counts:
    """Requests of this session, for the summary."""

    requests: int = 0
    retries: int = 0
    malformed: int = 0


class Judge:
    """Asks `cfg.model` at `cfg.endpoint` for verdicts; the key is given, never read from here."""

    def __init__(self, cfg: JudgeConfig, key: str | None):
        self.cfg, self.url = cfg, chat_url(cfg.endpoint)
        self.where = shown_url(self.url)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._key = key
        self.counts = Counts()

    def scrub(self, text: str) -> str:
        """`text` with the key masked: a server may echo it in an error, and replies are written."""
        return text.replace(self._key, "***") if self._key else text

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers=self.headers, timeout=self.cfg.timeout)

    async def ask(self, client: httpx.AsyncClient, prompt: str, *, first: bool = False) -> Reply:
        """The verdict on one judge prompt, asked twice at most (a reply without one is asked again).

        Args:
            first: the session's first request: one that cannot connect, or that the server
                refuses as a whole request (any 4xx), means the endpoint or its settings are wrong.

        Raises:
            JudgeUnavailable: see the module docstring.
        """
        reply = Reply(INVALID, "")
        for _ in range(2):
            text, usage, sent = await self._post(client, prompt, first=first)
            text = self.scrub(text)
            reply.text, reply.requests = text, reply.requests + sent
            reply.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            reply.completion_tokens += int(usage.get("completion_tokens") or 0)
            verdict = parse_verdict(text)
            if verdict is not None:
                reply.verdict = verdict
                return reply
            self.counts.malformed += 1
        return reply

    async def _post(self, client: httpx.AsyncClient, prompt: str, *, first: bool) -> tuple[str, dict, int]:
        """(reply text, usage, requests sent); an HTTP error of this request alone is its text."""
        body = {"model": self.cfg.model, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": self.cfg.max_tokens, "temperature": self.cfg.temperature}
        why = ""
        for attempt in range(self.cfg.retries + 1):
            self.counts.requests += 1
            wait = None
            try:
                r = await client.post(self.url, json=body)
            except httpx.TimeoutException:
                why = f"no answer within {self.cfg.timeout:g} s (evaluate.judge.timeout)"
            except httpx.TransportError as e:
                why = self.scrub(f"cannot connect ({type(e).__name__}: {str(e)[:120]})")
                if first:
                    raise JudgeUnavailable(f"the judge at {self.where} cannot be reached ({type(e).__name__}); "
                                           "start it, or fix --endpoint") from None
            else:
                if r.status_code == 200:
                    return (*_content(r, self.where, self.scrub), attempt + 1)
                message = self.scrub(f"HTTP {r.status_code}: {_error_message(r)}")
                if r.status_code in _FATAL or (first and 400 <= r.status_code < 500 and r.status_code != 429):
                    raise JudgeUnavailable(f"the judge at {self.where} refused model {self.cfg.model!r}: {message}; "
                                           f"check --model, the key in ${self.cfg.api_key_env} and the endpoint")
                if r.status_code in _PER_REQUEST:
                    return message, {}, attempt + 1
                why, wait = message, retry_after(r.headers.get("retry-after"))
            if attempt < self.cfg.retries:
                self.counts.retries += 1
                await asyncio.sleep(wait if wait is not None else min(self.cfg.backoff * 2 ** attempt, 60.0))
        raise JudgeUnavailable(f"the judge at {self.where} failed {self.cfg.retries + 1} times in a row ({why}); "
                               "the verdicts so far are kept: rerun to resume (or raise evaluate.judge.retries)")


def retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks to wait (delay-seconds or an HTTP date), at most 600;
    None without a usable one.

    Examples:
        >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        >>> retry_after("2"), retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now=t), retry_after("soon")
        (2.0, 30.0, None)
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - (now or dt.datetime.now(dt.timezone.utc))).total_seconds()
    return min(max(seconds, 0.0), _MAX_WAIT) if seconds == seconds else None


def _content(r: httpx.Response, where: str, scrub) -> tuple[str, dict]:
    try:
        data = r.json()
        text = data["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise JudgeUnavailable(f"the judge at {where} answered 200 without an OpenAI chat completion "
                               f"({scrub(r.text[:80])!r}); is it an OpenAI-compatible /v1/chat/completions?") from None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return str(text), usage


def _error_message(r: httpx.Response) -> str:
    """The server's error message on one line (OpenAI's `error.message`, FastAPI's `detail`, or text)."""
    try:
        data = r.json()
        error = data.get("error") if isinstance(data, dict) else None
        text = error.get("message") if isinstance(error, dict) else (data.get("detail") or error or r.text)
    except ValueError:
        text = r.text
    return " ".join(str(text).split())[:200] or "(no message)"
