"""The base of every config section: unknown keys are errors, values are frozen, text is plain."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


class Section(BaseModel):
    # allow_inf_nan: `.inf` and `.nan` pass every `gt`/`ge` bound and would end hours later in a NaN loss
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _text(cls, v: Any) -> Any:
        # a NUL byte names no file and a lone surrogate cannot be written as UTF-8: either would fail
        # later, with a traceback, where the value is used
        texts = [v] if isinstance(v, str) else [*v] if isinstance(v, list) else [*v, *v.values()] if isinstance(v, dict) else []
        if any(isinstance(t, str) and _BAD_TEXT.search(t) for t in texts):
            raise ValueError("must be plain text: no NUL character and no lone surrogate")
        return v
