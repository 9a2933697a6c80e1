"""Serving in tests: `Running` (a `paretohqd serve` app in a background thread of this process,
also used by benchmarks/bench_serve.py), the `served` fixture and the helpers that talk to it."""

from __future__ import annotations

import threading
import time

import openai
import pytest

KEY = "sk-test-key"
GREEDY = {"temperature": 0, "max_tokens": 6}
PROMPTS = ["What is a llama?", "How do I bake bread?", "Tell me a joke.", "Name a colour.",
           "Why is the sky blue? Explain it to a child in a few words.", "Hi", "What is 2 + 2?",
           "Write a haiku about the sea, please."]


class Running:
    """`with Running(app) as port:` starts uvicorn serving `app` on a free loopback port and
    stops it on exit."""

    def __init__(self, app, host: str = "127.0.0.1"):
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


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_policy):
    """(client, run folder, app, base URL): a server on 127.0.0.1 (a LoRA run of 3 preferences,
    `test_use.make_run`; cache 2), stopped after the module."""
    from openai import OpenAI
    from test_use import make_run

    from paretohqd.serve import create_app

    root = tmp_path_factory.mktemp("serve") / "two"
    make_run(root, tiny_policy, ["helpful", "harmless"], 3)
    app = create_app(root, api_key=KEY, cache_size=2, window=0.05)
    with Running(app) as port:
        url = f"http://127.0.0.1:{port}/v1"
        yield OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=120), root, app, url


def chat(client, prompt, model="pref-01", **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                          **{**GREEDY, **kw})


def error(call) -> tuple[int, dict]:
    """The status and OpenAI-style error body of a failing call (one line, the four fields)."""
    with pytest.raises(openai.APIStatusError) as e:
        call()
    body = e.value.body
    assert set(body) == {"message", "type", "param", "code"} and "\n" not in body["message"]
    return e.value.status_code, body
