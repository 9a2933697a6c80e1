"""The wire format: OpenAI's chat request body (validated, bounded) and its error shape."""

from __future__ import annotations

from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from paretohqd.serve.limits import MAX_STOP_CHARS, MAX_STOPS, SEED_END


class APIError(Exception):
    """An OpenAI-style error: HTTP status, one-line message, the request field it is about."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, param=self.param, code=self.code, type=self.type,
                              headers=self.headers)


def error_response(status: int, message: str, *, param=None, code=None, type="invalid_request_error",
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}},
                        status_code=status, headers=headers)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(BaseModel):
    """POST /v1/chat/completions. `stop` strings match the raw generated text (leading white space
    included) and end the answer there; the answer returned is that text up to the stop, stripped
    of white space at both ends (OpenAI returns it unstripped)."""

    # OpenAI's clients send fields this server has no use for (user, metadata, ...): ignore them
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, lt=SEED_END)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    stream_options: dict | None = None

    @field_validator("stop")
    @classmethod
    def _bounded_stops(cls, stop):
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOPS:
            raise ValueError(f"{len(stops)} stop strings; give at most {MAX_STOPS}")
        if any(not s for s in stops):
            raise ValueError("a stop string is empty; give non-empty strings")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"a stop string has {max(map(len, stops))} characters; give at most {MAX_STOP_CHARS}")
        return stop

    def stops(self) -> tuple[str, ...]:
        return tuple([self.stop] if isinstance(self.stop, str) else self.stop or [])
