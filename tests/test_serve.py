"""`paretohqd serve`: the OpenAI-compatible API on a tiny run folder (random 2-layer Llama, random
LoRA adapters; `test_use.make_run`), in-process on a free loopback port, through the official
`openai` client."""

import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx  # the HTTP client the openai package itself uses
import openai
import pytest
import torch
from openai import OpenAI
from serving import GREEDY, KEY, PROMPTS, Running, chat, error, served  # noqa: F401 - served: a fixture
from test_use import make_run

import paretohqd
from paretohqd.policy.generate import generate, load_for_generation
from paretohqd.policy.load import load_tokenizer
from paretohqd.serve import create_app

def expected(root, weights, prompts):
    """What `paretohqd.load(...).answer` says, greedily (the same weights, prompt format, tokens)."""
    loaded = paretohqd.load(root, weights, overrides=["generate.temperature=0", "generate.max_new_tokens=6"])
    return loaded.answer([[{"role": "user", "content": p}] for p in prompts])


def test_lists_each_trained_preference_and_the_base(served):
    client, *_ = served
    assert [m.id for m in client.models.list()] == ["pref-00", "pref-01", "pref-02", "base"]


def test_trained_interpolated_and_base_models_answer_as_loaded(served):
    client, root, app, _ = served
    got = chat(client, PROMPTS[0], "pref-01")
    assert got.model == "pref-01" and got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == expected(root, [0.5, 0.5], PROMPTS[:1])[0]
    assert 0 < got.usage.completion_tokens <= 6 and got.usage.prompt_tokens > 5
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens

    mixed = chat(client, PROMPTS[0], "w=0.25,0.75")
    assert mixed.model == "mix(pref-00:0.5,pref-01:0.5)"
    assert mixed.choices[0].message.content == expected(root, [0.25, 0.75], PROMPTS[:1])[0]
    assert chat(client, PROMPTS[0], "w=0.5,0.5").model == "pref-01"  # on the grid: the trained model

    cfg = app.state.models.cfg
    base = load_for_generation(cfg.policy, None, dtype=cfg.generate.dtype)
    gen = cfg.generate.model_copy(update={"temperature": 0.0, "max_new_tokens": 6})
    want, _ = generate(base, load_tokenizer(cfg.policy.model), [[{"role": "user", "content": PROMPTS[0]}]],
                       gen, seed=0)
    assert chat(client, PROMPTS[0], "base").choices[0].message.content == want[0]
    assert want[0] != got.choices[0].message.content  # the adapters change the answers: not vacuous


def test_stream_sends_the_answer_in_pieces_then_done(served):
    client, root, _, url = served
    whole = chat(client, PROMPTS[1]).choices[0].message.content
    chunks = list(chat(client, PROMPTS[1], stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2 and "".join(pieces) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens > 0 and all(c.id == chunks[0].id for c in chunks)
    # on the wire: server-sent events ending with [DONE]
    with httpx.stream("POST", f"{url}/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "pref-01", "messages": [{"role": "user", "content": "Hi"}], "stream": True,
                            **GREEDY}, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"

    # a stop string (here: a piece of the answer) ends it; the stream holds back what may be one.
    # Stops match the raw text (leading white space included), so the stop holds none and first
    # occurs where it is taken: a stop met at the raw answer's start would leave nothing to check.
    # (the second half first; a repetitive answer, 'inspired inspired ...', has its first
    # occurrences at the start)
    at = next(i for i in [*range(len(whole) // 2, len(whole) - 2), *range(1, len(whole) // 2)]
              if not any(c.isspace() for c in whole[i:i + 3]) and whole.find(whole[i:i + 3]) == i)
    stop, cut = whole[at:at + 3], whole[:at].strip()
    assert len(stop) == 3 and cut and chat(client, PROMPTS[1], stop=stop).choices[0].message.content == cut
    streamed = chat(client, PROMPTS[1], stop=[stop], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == cut


def test_sampling_with_a_seed_repeats_and_settings_are_honoured(served):
    client, *_ = served
    sampled = [chat(client, PROMPTS[2], temperature=1.0, seed=s).choices[0].message.content for s in (7, 7, 8, 9)]
    assert sampled[0] == sampled[1] and len(set(sampled)) > 1
    one = chat(client, PROMPTS[2], max_tokens=1)
    assert one.usage.completion_tokens <= 1 and one.choices[0].finish_reason == "length"


def test_eight_concurrent_requests_batch_and_answer_as_eight_sequential(served):
    client, _, app, _ = served
    names = ["pref-00", "pref-01", "pref-02", "w=0.25,0.75", "base", "pref-01", "pref-02", "w=0.25,0.75"]
    sequential = [chat(client, p, m).choices[0].message.content for m, p in zip(names, PROMPTS)]
    batches = len(app.state.batcher.batches)
    start = threading.Barrier(len(PROMPTS))

    def one(job):
        start.wait()
        return chat(client, job[1], job[0]).choices[0].message.content

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        concurrent = list(pool.map(one, zip(names, PROMPTS)))
    assert concurrent == sequential
    assert len(set(sequential)) > 4  # different models and prompts: not one answer for all
    # requests for different preferences shared a generate batch (LoRA adapters per row)
    assert max(app.state.batcher.batches[batches:]) > 2


def test_mixes_beyond_the_cache_are_dropped_and_rebuilt_alike(served):
    client, _, app, _ = served
    first = chat(client, PROMPTS[3], "w=0.25,0.75").choices[0].message.content
    for w in ("w=0.75,0.25", "w=0.1,0.9", "w=0.6,0.4"):  # the cache keeps 2 mixes
        chat(client, PROMPTS[3], w)
    model = app.state.models._model
    assert sum(name.startswith("mix-") for name in model.peft_config) == 2
    assert chat(client, PROMPTS[3], "w=0.25,0.75").choices[0].message.content == first


def test_a_client_leaving_mid_stream_disturbs_no_one(served):
    client, *_ = served
    want = [chat(client, p).choices[0].message.content for p in PROMPTS[:3]]

    def leave():
        stream = chat(client, PROMPTS[4], stream=True, max_tokens=200)
        next(iter(stream))
        stream.close()

    with ThreadPoolExecutor(4) as pool:
        left = pool.submit(leave)
        got = list(pool.map(lambda p: chat(client, p).choices[0].message.content, PROMPTS[:3]))
        left.result()
    assert got == want
    assert chat(client, PROMPTS[0]).choices[0].message.content == want[0]


def test_errors_are_openai_style_json(served):
    client, _, _, url = served
    status, body = error(lambda: chat(client, "hi", "pref-09"))
    assert status == 404 and body["code"] == "model_not_found" and body["param"] == "model"
    assert "pref-00, pref-01, pref-02, base" in body["message"] and "w=" in body["message"]

    status, body = error(lambda: chat(client, "hi", "w=0.5,0.6"))
    assert status == 400 and body["param"] == "model" and "sum to 1.1" in body["message"]
    status, body = error(lambda: chat(client, "hi", "w=0.2,0.3,0.5"))
    assert status == 400 and "3 weights for 2 objectives" in body["message"]

    status, body = error(lambda: chat(client, "hi", temperature=-1))
    assert status == 400 and body["param"] == "temperature"
    status, body = error(lambda: client.chat.completions.create(model="pref-01", messages=[{"role": "robot",
                                                                                             "content": "hi"}]))
    assert status == 400 and body["param"].startswith("messages.0")
    status, body = error(lambda: client.chat.completions.create(
        model="pref-01", messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]))
    assert status == 400 and body["param"] == "messages" and "last message" in body["message"]

    headers = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{url}/chat/completions", headers=headers, json={"model": "pref-01"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = httpx.post(f"{url}/chat/completions", headers={**headers, "content-type": "application/json"},
                   content=b"{not json")
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}

    long = "llama " * 200
    fits = chat(client, long, max_tokens=2)  # answered; its prompt_tokens say where the limit falls
    n = fits.usage.prompt_tokens
    assert n > 400 and fits.choices[0].finish_reason == "length"
    status, body = error(lambda: chat(client, long, max_tokens=1024 - n + 1))
    assert status == 400 and body["code"] == "context_length_exceeded" and body["param"] == "messages"
    assert f"maximum context length is 1024 tokens; the prompt has {n} tokens" in body["message"]
    assert f"at most {n - 1}" in body["message"]

    for key in ("wrong", None):
        r = httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {key}"} if key else {})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()


def test_an_internal_failure_is_a_generic_500_with_a_request_id_its_detail_in_the_log(served, monkeypatch, caplog):
    client, _, app, _ = served

    def broken(weights):
        raise RuntimeError("weights went missing\n  (a second line)")

    monkeypatch.setattr(app.state.models, "get", broken)
    with caplog.at_level(logging.ERROR, logger="paretohqd.serve"):
        status, body = error(lambda: chat(client, "hi", "pref-02"))
        rid = re.fullmatch(r"internal error \(request id (req-[0-9a-f]{12})\); the server log has the details",
                           body["message"])
        assert status == 500 and body["type"] == "server_error" and rid
        # the detail (the exception, its traceback) only in the server's log, under that id
        logged = [r for r in caplog.records if rid[1] in r.getMessage()]
        assert logged and "weights went missing" in logged[0].exc_text and "Traceback" in logged[0].exc_text
        assert "weights went missing" not in json.dumps(body)
        # a stream that has begun ends with the same kind of event
        events = list(chat(client, "hi", "pref-02", stream=True).response.iter_lines())
    last = json.loads(next(e for e in events if '"error"' in e)[6:])["error"]
    assert last["type"] == "server_error" and "request id req-" in last["message"]
    assert "weights went missing" not in last["message"]
    monkeypatch.undo()
    assert chat(client, "hi", "pref-02").choices[0].message.content is not None  # and the server goes on


# Other kinds of run ------------------------------------------------------------------------------


def full_run(root, policy: str) -> None:
    """A finished run without LoRA: each preference a whole model (the tiny Llama, perturbed)."""
    from transformers import AutoModelForCausalLM

    from paretohqd.config import Config, dump_config
    from paretohqd.io import write_json

    make_run(root, policy, ["helpful", "harmless"], 3)  # the config and reward stand-ins
    cfg = Config.model_validate({**yaml_config(root), "train": {"lora": False}})
    (root / "config.yaml").write_text(dump_config(cfg))
    for i in range(3):
        out = root / "stage1" / f"pref-{i:02d}"
        model = AutoModelForCausalLM.from_pretrained(policy)
        torch.manual_seed(10 + i)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        for f in out.iterdir():  # the adapter make_run left
            f.unlink()
        model.save_pretrained(out)
        write_json({"steps": 0}, out / "train.json")


def yaml_config(root) -> dict:
    import yaml

    return yaml.safe_load((root / "config.yaml").read_text())


def test_a_run_without_lora_serves_one_merged_model_per_preference(tmp_path, tiny_policy):
    root = tmp_path / "full"
    full_run(root, tiny_policy)
    app = create_app(root, cache_size=2, window=0.2)
    names = ["pref-01", "w=0.25,0.75", "pref-01", "w=0.25,0.75"]
    with Running(app) as port:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        sequential = [chat(client, p, m) for m, p in zip(names, PROMPTS)]
        assert sequential[1].model == "mix(pref-00:0.5,pref-01:0.5)"
        answers = [c.choices[0].message.content for c in sequential]
        assert answers[:2] == [expected(root, [0.5, 0.5], PROMPTS[:1])[0], expected(root, [0.25, 0.75], PROMPTS[1:2])[0]]
        n = len(app.state.batcher.batches)
        start = threading.Barrier(4)

        def one(job):
            start.wait()
            return chat(client, job[1], job[0]).choices[0].message.content

        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(one, zip(names, PROMPTS)))
        assert together == answers
        assert max(app.state.batcher.batches[n:]) == 2  # two requests of one model shared a batch, no more


def test_a_ric_run_adds_each_preferences_tag(tmp_path, tiny_policy):
    root = tmp_path / "ric"
    make_run(root, tiny_policy, ["helpful", "harmless"], 3, method="ric")
    with Running(create_app(root)) as port:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        got = chat(client, PROMPTS[0], "w=0.3,0.7")
        assert got.model == "ric(0.3,0.7)"
        assert got.choices[0].message.content == expected(root, [0.3, 0.7], PROMPTS[:1])[0]
        trained = chat(client, PROMPTS[0], "pref-01")
        assert trained.choices[0].message.content == expected(root, [0.5, 0.5], PROMPTS[:1])[0]
        # the random model answers alike whatever the tag; the prompt shows it is there
        assert trained.usage.prompt_tokens > chat(client, PROMPTS[0], "base").usage.prompt_tokens + 5
