"""`paretohqd serve`'s bounds: what a request may ask for, what the queue holds, how long an answer
may take, what a burst of preferences may build, who may connect, and what a client that leaves
costs. Each bad input gets an OpenAI-style error (docs/reliability.md lists them)."""

import dataclasses
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx  # the HTTP client the openai package itself uses
import pytest
from serving import KEY, PROMPTS, Running, chat, error, served  # noqa: F401 - served: a fixture
from typer.testing import CliRunner

from paretohqd.cli import app as cli
from paretohqd.io import InputError
from paretohqd.serve import chat as chat_module
from paretohqd.serve import create_app
from paretohqd.serve.models import on_grid

HEADERS = {"Authorization": f"Bearer {KEY}"}


def post(url, body, **kw):
    return httpx.post(f"{url}/chat/completions", headers={**HEADERS, **kw.pop("headers", {})}, json=body,
                      timeout=60, **kw)


def until(condition, seconds=30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def held(served, monkeypatch):
    """(inside, release): the worker stops before its next generate call until `release` is set
    (`inside` tells it got there): requests then wait, queued or in the worker, as under load."""
    models = served[2].state.models
    get, inside, release = models.get, threading.Event(), threading.Event()

    def slow(weights):
        inside.set()
        release.wait(60)
        return get(weights)

    monkeypatch.setattr(models, "get", slow)
    yield inside, release
    release.set()


@pytest.mark.parametrize(("field", "value", "why"), [
    ("stop", ["a", "b", "c", "d", "e"], "5 stop strings; give at most 4"),
    ("stop", ["ok", ""], "a stop string is empty"),
    ("stop", "x" * 65, "a stop string has 65 characters; give at most 64"),
    ("seed", 2**63, "less than 9223372036854775808"),
    ("seed", -1, "greater than or equal to 0"),
])
def test_bad_stops_and_seeds_are_400s_naming_the_field(served, field, value, why):
    client, *_ = served
    status, body = error(lambda: chat(client, "hi", temperature=1.0, **{field: value}))
    assert status == 400 and body["param"] == field and why in body["message"]


def test_max_tokens_over_the_cap_is_a_400_and_none_asked_gets_the_run_default_within_it(served, monkeypatch):
    client, _, app, _ = served
    for field in ("max_tokens", "max_completion_tokens"):
        status, body = error(lambda: chat(client, "hi", **{field: 1025}))
        assert status == 400 and body["param"] == field and body["code"] == "max_tokens_exceeded"
        assert "at most 1024 per request (paretohqd serve --max-tokens)" in body["message"]
    service = app.state.chat
    monkeypatch.setattr(service, "limits", dataclasses.replace(service.limits, max_tokens=3))
    got = client.chat.completions.create(model="pref-01", messages=[{"role": "user", "content": "hi"}],
                                         temperature=0)
    assert got.usage.completion_tokens <= 3 and got.choices[0].finish_reason == "length"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_cap_is_a_413(served, chunked):
    *_, url = served
    body = json.dumps({"model": "pref-01", "messages": [{"role": "user", "content": "x" * (1 << 20)}]}).encode()
    content = iter([body[i:i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    r = httpx.post(f"{url}/chat/completions", headers={**HEADERS, "content-type": "application/json"},
                   content=content, timeout=60)
    assert r.status_code == 413 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert "larger than 1,048,576 bytes (paretohqd serve --max-body)" in r.json()["error"]["message"]


def test_a_full_queue_answers_429_with_retry_after_and_the_queued_ones_still_answer(served, held, monkeypatch):
    client, _, app, url = served
    batcher = app.state.batcher
    monkeypatch.setattr(batcher, "limits", dataclasses.replace(batcher.limits, max_queue=1))
    inside, release = held
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(chat, client, PROMPTS[0])
        assert inside.wait(30)  # generating: out of the queue
        second = pool.submit(chat, client, PROMPTS[1])
        assert until(lambda: len(batcher.pending) == 1)
        r = post(url, {"model": "pref-01", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limit_exceeded" and "--max-queue 1" in r.json()["error"]["message"]
        release.set()
        assert first.result().choices[0].message.content and second.result().choices[0].message.content


def test_an_answer_past_the_timeout_is_a_504_and_its_row_leaves_the_batch(served, held, monkeypatch):
    client, _, app, _ = served
    service, batcher = app.state.chat, app.state.batcher
    monkeypatch.setattr(service, "limits", dataclasses.replace(service.limits, timeout=0.5))
    inside, release = held
    dropped = batcher.dropped
    status, body = error(lambda: chat(client, PROMPTS[0], max_tokens=50))
    assert status == 504 and body["type"] == "timeout" and "--timeout" in body["message"]
    events = [line for line in chat(client, PROMPTS[1], max_tokens=50, stream=True).response.iter_lines() if line]
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"
    assert json.loads(events[-1][6:])["error"]["type"] == "timeout"
    release.set()
    assert until(lambda: batcher.dropped > dropped)  # the one generating: its row ended at its first token


@pytest.mark.parametrize("stream", [False, True], ids=["waiting", "mid-stream"])
def test_a_client_that_leaves_has_its_row_dropped_from_the_batch(served, held, stream):
    *_, app, url = served
    batcher = app.state.batcher
    inside, release = held
    dropped = batcher.dropped
    body = {"model": "pref-01", "messages": [{"role": "user", "content": PROMPTS[4]}], "max_tokens": 500,
            "temperature": 0, "stream": stream}
    with httpx.Client(headers=HEADERS, timeout=httpx.Timeout(30, read=1.0)) as http:
        if stream:
            with http.stream("POST", f"{url}/chat/completions", json=body) as r:
                lines = r.iter_lines()  # (kept: a dropped line iterator closes the connection)
                next(lines)
                assert inside.wait(30)  # generating (a job still queued would just leave the queue)
        else:
            with pytest.raises(httpx.ReadTimeout):
                http.post(f"{url}/chat/completions", json=body)
    assert inside.wait(30)
    time.sleep(0.6)  # the server notices (a waiting request checks every 0.25 s)
    release.set()
    assert until(lambda: batcher.dropped == dropped + 1)  # ended at its first token, not after 500


def test_a_burst_of_distinct_preferences_builds_at_most_cache_mixes_per_batch(served):
    client, _, app, _ = served
    names = [f"w={a},{1 - a:g}" for a in (0.05, 0.15, 0.35, 0.45, 0.65)]  # 5 mixes, cache 2
    sequential = [chat(client, PROMPTS[i], m).choices[0].message.content for i, m in enumerate(names)]
    n = len(app.state.batcher.batches)
    start = threading.Barrier(len(names))

    def one(i):
        start.wait()
        return chat(client, PROMPTS[i], names[i]).choices[0].message.content

    with ThreadPoolExecutor(len(names)) as pool:
        assert list(pool.map(one, range(len(names)))) == sequential
    assert app.state.models.peak <= 2 and len(app.state.batcher.batches) - n >= 3
    model = app.state.models._model
    assert sum(name.startswith("mix-") for name in model.peft_config) <= 2


def test_weights_are_rounded_to_a_grid_so_near_ones_share_a_mix(served):
    client, _, app, _ = served
    want = chat(client, PROMPTS[0], "w=0.25,0.75")
    near = chat(client, PROMPTS[0], "w=0.2501,0.7499")
    assert near.model == want.model == "mix(pref-00:0.5,pref-01:0.5)"
    assert near.choices[0].message.content == want.choices[0].message.content
    assert on_grid([0.1234, 0.8766]).tolist() == [0.123, 0.877] and on_grid([0.3333] * 3).sum() == 1


def test_the_chat_template_and_tokenizer_run_off_the_event_loop(served, monkeypatch):
    client, *_ = served
    threads = []

    def spy(*args):
        threads.append(threading.current_thread().name)
        return prompt_ids(*args)

    prompt_ids = chat_module.prompt_ids
    monkeypatch.setattr(chat_module, "prompt_ids", spy)
    chat(client, "hi")
    assert threads and all(name.startswith("paretohqd-tokenize") for name in threads)


def test_keyless_answers_only_requests_addressed_to_this_machine(served):
    _, root, *_ = served
    with Running(create_app(root)) as port:
        body = {"model": "pref-01", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            assert httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Host": host}).status_code == 200
        for host in (f"evil.example:{port}", "localhost:1", "127.0.0.1.evil.example", f"[::2]:{port}"):
            r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={"Host": host}, json=body)
            assert r.status_code == 421 and r.json()["error"]["code"] == "invalid_host"


def test_an_empty_key_and_a_keyless_public_bind_are_refused_in_one_line(served):
    _, root, *_ = served
    with pytest.raises(InputError, match="^--api-key is empty; give a key"):
        create_app(root, api_key="")
    for args, why in ((["--api-key", ""], "--api-key is empty; give a key"),
                      (["--host", "0.0.0.0"], "--host 0.0.0.0 without --api-key: anyone who reaches this port")):
        result = CliRunner().invoke(cli, ["serve", str(root), *args])
        assert result.exit_code == 2 and result.output.startswith(f"error: {why}")
        assert result.output.count("\n") == 1 and "Traceback" not in result.output
