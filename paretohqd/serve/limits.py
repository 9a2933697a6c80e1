"""What one `paretohqd serve` accepts: each bound, its default and its flag, stated once."""

from __future__ import annotations

from dataclasses import dataclass

MAX_STOPS = 4
"""Stop strings one request may give (OpenAI's limit)."""
MAX_STOP_CHARS = 64
"""Characters one stop string may have: a stop is checked against the text after every token."""
SEED_END = 2**63
"""Seeds are 0 <= seed < SEED_END (what a torch generator takes)."""
WEIGHT_GRID = 1e-3
"""`w=` weights are rounded to this grid, so near-identical preferences share one mix."""


@dataclass(frozen=True)
class Limits:
    """The bounds of one server (`paretohqd serve` flags of the same names). Beyond each, a request
    gets an OpenAI-style error and the server's memory and queue stay bounded."""

    max_queue: int = 64
    """`--max-queue`: requests waiting for a batch (not yet generating); one more gets 429 with a
    Retry-After header."""
    max_tokens: int = 1024
    """`--max-tokens`: the most tokens a request may ask for (max_tokens, max_completion_tokens);
    more is a 400. A request that asks for none gets the run's generate.max_new_tokens, at most this."""
    max_body: int = 1 << 20
    """`--max-body`: request body bytes (1 MiB); more is a 413."""
    timeout: float = 300.0
    """`--timeout`: seconds from a request's arrival to its last token; then 504 (a stream that has
    begun ends with an error event). Its row leaves the batch."""
    max_batch: int = 64
    """Requests the dispatcher takes from the queue for one batch (the rest wait for the next)."""

    def __post_init__(self):
        bad = [f"{k} must be > 0 (got {v})" for k, v in vars(self).items() if not v > 0]
        if bad:
            raise ValueError("; ".join(bad))
