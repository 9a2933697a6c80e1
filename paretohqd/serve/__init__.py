"""`paretohqd serve RUN`: a trained run's models behind an OpenAI-compatible HTTP API (FastAPI +
uvicorn): `GET /v1/models` and `POST /v1/chat/completions` (with `stream: true`).

Models: `pref-XX` (each trained preference), `base` (the policy before training) and any other
preference as `w=0.3,0.7`, which gets what `paretohqd.load` gives it: the trained model on the
grid, the exact mix of the trained models around it otherwise, RiC's tag for RiC. `w=` weights
are rounded to a grid of 1e-3 first (`limits.WEIGHT_GRID`), so near-identical ones share a mix.

A LoRA run is served by one model: the base with every trained adapter loaded unmerged, and each
mix asked for added as one more adapter (PEFT's `cat` combination, exact; the last `cache_size`
mixes used are kept). One batch can then hold requests for different preferences, each row with
its own adapter (PEFT's mixed-adapter batches, as vLLM serves LoRA adapters). Without LoRA, each
preference is its own merged model (the last `cache_size` used are kept) and batches are per model.

Batching (`batcher.py`): every request becomes a job on a bounded queue (`Limits.max_queue`;
beyond it, 429). One dispatcher task takes the first job, waits `window` seconds for the requests
sent with it (again while more keep arriving, up to four windows), then takes a batch from the
queue, oldest first: at most `Limits.max_batch` jobs needing at most `cache_size` mixes (without
LoRA: models), so a burst of distinct preferences never holds more than the cache; the rest wait
for a later batch. It groups the batch by sampling settings (and, without LoRA, by model) and
hands each group to one worker thread as one `generate` call. The event loop only awaits that
thread, so it keeps taking requests while the worker generates. A client that leaves (or runs out
of `Limits.timeout`) has its row end at the next token.

The modules follow the protocol's seams: `protocol.py` (request body and error shape),
`limits.py` (every bound and its default), `models.py` (the model cache), `batcher.py`,
`chat.py` (one service: `full()` and `stream()` answers) and `app.py` (the routes and `serve`).
"""

from paretohqd.serve.limits import Limits

__all__ = ["Limits", "create_app", "serve"]


def __getattr__(name: str):
    # the app (FastAPI, the run's models) is imported when asked for: the CLI reads `Limits`'
    # defaults for its help without it
    if name in ("create_app", "serve"):
        from paretohqd.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'paretohqd.serve' has no attribute {name!r}")
