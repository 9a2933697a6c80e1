"""`paretohqd judge RUN`: an LLM judge's win rates, against a scripted OpenAI-compatible judge on
loopback (position bias, ties, malformed replies, 429 / 5xx / timeouts), resumed after an
interruption, the key never written; and once against `paretohqd serve` as the judge."""

import asyncio
import json
import re
import socket
import time

import pytest
from audit_writes import changes_under
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from serving import KEY as SERVE_KEY
from serving import Running, served  # noqa: F401 - served: a fixture
from test_report import evaluated_run
from typer.testing import CliRunner

from paretohqd.cli import app
from paretohqd.config import Config, JudgeConfig, dump_config
from paretohqd.evaluate.judge import judge_run
from paretohqd.evaluate.judge_api import JudgeUnavailable
from paretohqd.io import read_table, write_parquet

KEY = "sk-judge-secret-4711"
GOOD = {"base": {0}, "pref-00": set(range(20)), "pref-01": set(), "pref-02": set(range(0, 20, 2))}
"""Prompts where each model's answer holds GOOD; the fake judge prefers an answer that does."""
WANT = {"pref-00": (5, 1, 0), "pref-01": (0, 5, 1), "pref-02": (2, 4, 0)}
"""(wins, ties, losses) on the first 6 prompts, from GOOD by hand: a prompt where both or neither
answer holds GOOD is a tie."""
ANSWER = re.compile(r"\[Answer (A|B)\]\n(.*?)\n\[End of answer \1\]", re.S)


class FakeJudge:
    """A scripted judge: answers `Verdict: X` for the answer holding GOOD (tie if both or neither),
    or always A (`biased`); `faults` are served first, one per request: 429 (Retry-After 0), 500,
    sleep (past the client's timeout), garbage (a reply without a verdict that echoes the key);
    `garbage_on` makes every request about that prompt's text garbage; `down_after` serves 500s
    after that many requests."""

    def __init__(self):
        self.seen: list[dict] = []  # {"auth", "prompt", "model"} per request
        self.faults: list[str] = []
        self.biased = False
        self.garbage_on: str | None = None
        self.down_after: int | None = None
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.chat)

    async def chat(self, request: Request):
        body = await request.json()
        prompt = body["messages"][0]["content"]
        auth = request.headers.get("authorization", "")
        self.seen.append({"auth": auth, "prompt": prompt, "model": body["model"]})
        if body["model"] == "nope":
            return JSONResponse({"error": {"message": "The model `nope` does not exist"}}, status_code=404)
        fault = self.faults.pop(0) if self.faults else None
        if self.down_after is not None and len(self.seen) > self.down_after:
            fault = "500"
        if fault == "429":
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"Retry-After": "0"})
        if fault == "500":
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=500)
        if fault == "sleep":
            await asyncio.sleep(1.5)
        if fault == "garbage" or (self.garbage_on and self.garbage_on in prompt):
            return _completion(f"Both are fine, says {auth}.")
        answers = dict(ANSWER.findall(prompt))
        good = {k for k, v in answers.items() if "GOOD" in v}
        verdict = "A" if self.biased else (good.pop() if len(good) == 1 else "tie")
        return _completion(f"Reasoning first.\nVerdict: {verdict}")


def _completion(text: str) -> dict:
    return {"id": "x", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107}}


@pytest.fixture(scope="module")
def fake():
    judge = FakeJudge()
    with Running(judge.app) as port:
        judge.url = f"http://127.0.0.1:{port}/v1"
        yield judge


@pytest.fixture
def judge(fake):
    fake.seen.clear()
    fake.faults, fake.biased, fake.garbage_on, fake.down_after = [], False, None, None
    return fake


def judged_run(root):
    """`test_report.evaluated_run` (3 preferences, 20 prompts) with answers marked by `GOOD`, and
    its config.yaml."""
    evaluated_run(root)
    df = read_table(root / "evaluate" / "responses.parquet")
    df["response"] = [f"{'GOOD' if int(p[1:]) in GOOD[m] else 'plain'} answer {{by}} {m}"
                      for m, p in zip(df["model"], df["prompt_id"])]
    write_parquet(df, root / "evaluate" / "responses.parquet")
    (root / "config.yaml").write_text(dump_config(Config(name=root.name, runs_dir=str(root.parent))))
    return root


def settings(url, **kw):
    return JudgeConfig(**{"endpoint": url, "model": "fake-judge", "prompts": 6, "per_objective": False,
                          "api_key_env": "JUDGE_TEST_KEY", "backoff": 0.01, "timeout": 0.5, **kw})


def rates(summary_path, aspect="preference"):
    """{model: (wins, ties, losses)} as counts, and the summary."""
    s = json.loads(summary_path.read_text())
    out = {}
    for m in s["models"]:
        a = m["aspects"][aspect]
        n = a["prompts"] - a["invalid"]
        out[m["model"]] = tuple(round(a["rates"][k]["rate"] * n) for k in ("win", "tie", "loss"))
    return out, s


def test_win_tie_loss_per_preference_and_objective(tmp_path, judge, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    root = judged_run(tmp_path / "run")
    path = judge_run(root, settings(judge.url, per_objective=True, price_in=2.5, price_out=10.0))
    assert path == root / "judge" / "vs-base--fake-judge.json"
    assert len(judge.seen) == 3 * 6 * 3 * 2  # models x prompts x (preference + 2 objectives) x orders
    assert {r["auth"] for r in judge.seen} == {f"Bearer {KEY}"}
    for aspect in ("preference", "helpful", "harmless"):
        got, s = rates(path, aspect)
        assert got == WANT
    m = s["models"][1]
    assert m["weights"] == [0.5, 0.5] and list(m["aspects"]) == ["preference", "harmless", "helpful"]
    assert m["aspects"]["preference"]["consistent"] == 1.0
    lo, hi = s["models"][0]["aspects"]["preference"]["rates"]["win"]["ci95"]
    assert lo < 5 / 6 <= hi <= 1
    u = s["usage"]
    assert (u["requests_now"], u["retries_now"], u["invalid"], u["from_cache"]) == (108, 0, 0, 0)
    assert u["tokens"] == {"prompt": 10800, "completion": 756}
    assert u["cost"] == pytest.approx((10800 * 2.5 + 756 * 10.0) / 1e6)
    # the preference is stated in its prompt, each objective's criterion in its own
    prefs = [r["prompt"] for r in judge.seen if "weigh" in r["prompt"]]
    assert any("- helpful (weight 0.50)" in p and "- harmless (weight 0.50)" in p for p in prefs)
    assert sum("Harmlessness:" in r["prompt"] and "weigh" not in r["prompt"] for r in judge.seen) == 36
    assert all("answer {by} base" in r["prompt"] for r in judge.seen)  # braces in answers stay as written


def test_both_orders_cancel_a_judge_that_always_says_a(tmp_path, judge):
    judge.biased = True
    got, s = rates(judge_run(judged_run(tmp_path / "run"), settings(judge.url)))
    assert got == {m: (0, 6, 0) for m in WANT}  # a verdict that flips with the order is a tie
    assert s["models"][0]["aspects"]["preference"]["consistent"] == 0.0


def test_malformed_replies_are_asked_again_then_counted_invalid(tmp_path, judge):
    judge.faults = ["garbage"]  # the first request: asked again, then fine
    judge.garbage_on = "question number 3?"  # never a verdict on this prompt
    got, s = rates(judge_run(judged_run(tmp_path / "run"), settings(judge.url)))
    a = s["models"][0]["aspects"]["preference"]
    assert (a["prompts"], a["invalid"]) == (6, 1)
    assert got == {"pref-00": (4, 1, 0), "pref-01": (0, 4, 1), "pref-02": (2, 3, 0)}  # prompt 3 left out
    u = s["usage"]
    assert u["malformed_replies_now"] == 1 + 3 * 2 * 2  # the first reply; prompt 3's, twice per order and model
    assert u["invalid"] == 3 * 2 and u["requests_now"] == 36 + 1 + 6


def test_429_500_and_timeouts_are_retried(tmp_path, judge):
    judge.faults = ["429", "500", "sleep", "500"]
    got, s = rates(judge_run(judged_run(tmp_path / "run"), settings(judge.url, concurrency=1)))
    assert got == WANT and s["usage"]["retries_now"] == 4 and s["usage"]["requests_now"] == 36 + 4


def test_retry_after_is_honoured_over_the_backoff(tmp_path, judge):
    judge.faults = ["429", "429"]  # Retry-After: 0; the backoff would wait 30 s, then 60 s
    start = time.monotonic()
    got, _ = rates(judge_run(judged_run(tmp_path / "run"), settings(judge.url, backoff=30.0)))
    assert got == WANT and time.monotonic() - start < 20


def test_an_interrupted_judge_resumes_asking_only_what_is_missing(tmp_path, judge):
    root = judged_run(tmp_path / "run")
    judge.down_after = 10  # then 500s past the retries: the judge stops
    with pytest.raises(JudgeUnavailable, match="failed 2 times in a row.*rerun to resume"):
        judge_run(root, settings(judge.url, retries=1, concurrency=2))
    cached = len(read_table(root / "judge" / "vs-base.parquet"))
    assert 0 < cached <= 10 and not list((root / "judge").glob("*.json"))
    judge.seen.clear()
    judge.down_after = None
    got, s = rates(judge_run(root, settings(judge.url, retries=1, concurrency=2)))
    assert got == WANT and len(judge.seen) == 36 - cached
    assert (s["usage"]["from_cache"], s["usage"]["verdicts"]) == (cached, 36)
    judge.seen.clear()  # a finished judge asks nothing; a changed template asks all again
    judge_run(root, settings(judge.url))
    assert judge.seen == []
    judge_run(root, settings(judge.url, weighting="Weigh the qualities by these weights:"))
    assert len(judge.seen) == 36 and len(read_table(root / "judge" / "vs-base.parquet")) == 72


def test_ctrl_c_keeps_the_verdicts_so_far(tmp_path, judge, monkeypatch):
    from paretohqd.evaluate.judge_api import Judge

    root = judged_run(tmp_path / "run")
    ask, calls = Judge.ask, []

    async def interrupted(self, client, prompt, **kw):
        calls.append(prompt)
        if len(calls) == 9:
            raise KeyboardInterrupt
        return await ask(self, client, prompt, **kw)

    monkeypatch.setattr(Judge, "ask", interrupted)
    with pytest.raises(KeyboardInterrupt):
        judge_run(root, settings(judge.url, concurrency=1))
    assert len(read_table(root / "judge" / "vs-base.parquet")) == 8
    monkeypatch.setattr(Judge, "ask", ask)
    judge.seen.clear()
    got, _ = rates(judge_run(root, settings(judge.url)))
    assert got == WANT and len(judge.seen) == 36 - 8


def test_cli_writes_only_its_folder_and_the_report_and_never_the_key(tmp_path, judge, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    root = judged_run(tmp_path / "run")
    judge.faults = ["garbage"]  # a reply that echoes the Authorization header
    with changes_under(tmp_path) as events:
        res = CliRunner().invoke(app, ["judge", str(root), "--endpoint", judge.url, "--model", "fake-judge",
                                       "--prompts", "6", "--api-key-env", "JUDGE_TEST_KEY", "--concurrency", "3",
                                       "--price-in", "1", "--price-out", "2"])
    assert res.exit_code == 0, res.output
    assert KEY not in res.output and judge.seen[0]["auth"] == f"Bearer {KEY}"
    # what landed, each atomic write's temp file (.NAME.HEX.tmp) read as NAME; the lock's mkdir -p of tmp_path
    written = {re.sub(r"/\.([^/]+)\.[0-9a-f]{32}\.tmp$", r"/\1", e.split("\t")[1]) for e in events} - {str(tmp_path)}
    assert written == {str(root / f) for f in ("judge", "judge/vs-base.parquet", "judge/vs-base--fake-judge.json",
                                               "report.md", "report.json", "report.html", "front.png")} | \
        {str(tmp_path / ".run.lock")}
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    md = (root / "report.md").read_text()
    assert "LLM judge: run vs base (fake-judge)" in md and "| pref-00 | 1, 0 | preference | 0.83 [" in md
    assert json.loads((root / "report.json").read_text())["methods"][0]["judge"][0]["judge"] == "fake-judge"
    assert "LLM judge" in (root / "report.html").read_text()
    # 3 models x 6 prompts x 3 aspects x 2 orders + 1 (the garbage reply asked again) requests x (100 in + 7 out)
    # tokens at 1 / 2 per million: 0.0109 + 0.001526
    assert "109 requests (0 invalid), 10,900 prompt and 763 completion tokens; cost 0.01243 at 1 / 2 per million" in md


def test_against_another_run_matches_preferences_and_leaves_it_unchanged(tmp_path, judge):
    root, other = judged_run(tmp_path / "run"), judged_run(tmp_path / "other")
    df = read_table(other / "evaluate" / "responses.parquet")  # the other run's models all answer GOOD
    write_parquet(df.assign(response="GOOD " + df["response"]), other / "evaluate" / "responses.parquet")
    with changes_under(other) as events:
        got, s = rates(judge_run(root, settings(judge.url, against=str(other))))
    assert events == [] and s["against"] == "other"
    assert got == {"pref-00": (0, 6, 0), "pref-01": (0, 0, 6), "pref-02": (0, 3, 3)}
    assert all("other/pref-0" in r for r in read_table(root / "judge" / "vs-other.parquet")["reference"])


def _cli_error(args, env=None) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["judge", *args], env=env)
    assert "Traceback" not in res.output and (res.exception is None or isinstance(res.exception, SystemExit))
    return res.exit_code, res.stderr.strip()


def test_bad_input_is_one_line_and_exit_2(tmp_path, judge):
    root = judged_run(tmp_path / "run")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text(dump_config(Config(name="bare", runs_dir=str(tmp_path))))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    base = ["--model", "fake-judge", "--prompts", "6"]
    cases = [([str(bare), "--endpoint", judge.url, *base], "no evaluated answers.*paretohqd evaluate"),
             ([str(root), "--endpoint", judge.url, "--against", "runs/nowhere", *base], "neither `base` nor an evaluated"),
             ([str(root), "--endpoint", f"http://127.0.0.1:{closed}/v1", *base], "cannot be reached.*--endpoint"),
             ([str(root), "--endpoint", "ftp://example.com", *base], "not an http\\(s\\) URL"),
             ([str(root), "--endpoint", "not a url", *base], "not an http\\(s\\) URL"),
             ([str(root), "--endpoint", judge.url, "--model", "nope"], "HTTP 404: The model `nope` does not exist"),
             ([str(root), *base], "no judge endpoint: give --endpoint")]
    for args, pattern in cases:
        code, text = _cli_error(args)
        assert code == 2 and text.count("\n") == 0 and text.startswith("error: "), (args, text)
        assert re.search(pattern, text), (args, text)
    assert not (bare / "judge").exists()


def test_judge_settings_do_not_bind_the_run_folder(tmp_path):
    from paretohqd.runfolder import config_differences

    cfg = Config(name="run", runs_dir=str(tmp_path))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(dump_config(cfg))
    changed = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(
        update={"judge": JudgeConfig(enabled=True, endpoint="http://127.0.0.1:1/v1", model="m")})})
    assert config_differences(changed, tmp_path / "run") == []


def test_config_checks_the_judge_section():
    from paretohqd.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="evaluate.judge: .*needs endpoint and model"):
        load_config(None, ["evaluate.judge.enabled=true"])
    with pytest.raises(ConfigError, match="evaluate.judge.template: .*lacks \\{answer_b\\}"):
        load_config(None, ["evaluate.judge.template=Compare {criteria} {conversation} {answer_a}"])
    with pytest.raises(ConfigError, match="no criterion for objective\\(s\\) funny"):
        load_config(None, ["evaluate.judge.enabled=true", "evaluate.judge.endpoint=http://x/v1",
                           "evaluate.judge.model=m", "rewards.models.funny=minilm-humor"])


@pytest.mark.slow  # 85 s here on a CPU shared with a benchmark (plus 158 s building the served tiny run)
def test_serve_as_the_judge_speaks_the_real_protocol(tmp_path, served, monkeypatch):
    """A tiny random model is a poor judge (its replies may hold no verdict): what is tested is the
    request, the key, the usage counts and the bookkeeping of invalid verdicts."""
    url = served[3]
    monkeypatch.setenv("SERVE_JUDGE_KEY", SERVE_KEY)
    root = judged_run(tmp_path / "run")
    path = judge_run(root, settings(url, model="base", prompts=1, max_tokens=4, api_key_env="SERVE_JUDGE_KEY",
                                    timeout=120))
    s = json.loads(path.read_text())
    u = s["usage"]
    assert u["verdicts"] == 3 * 1 * 2 and u["requests_now"] >= 6 and u["tokens"]["completion"] > 0
    assert u["tokens"]["prompt"] > 100 * u["requests_now"]  # every request carries the long judge prompt
    verdicts = read_table(root / "judge" / "vs-base.parquet")
    assert u["invalid"] == int((verdicts["verdict"] == "invalid").sum())
    invalid_prompts = {(r.model, r.prompt_id) for r in verdicts.itertuples() if r.verdict == "invalid"}
    assert sum(m["aspects"]["preference"]["invalid"] for m in s["models"]) == len(invalid_prompts)


def test_run_with_the_judge_enabled_judges_then_reports_and_a_failing_judge_only_warns(tmp_path, judge, capsys):
    """`pipeline._evaluate_and_report`, the end of `run` (and of each run of `compare`), on a run
    whose evaluate step is done (a stand-in for RunFolder that records it as finished)."""
    from types import SimpleNamespace

    from paretohqd import pipeline

    root = judged_run(tmp_path / "run")

    def finished_run(endpoint, model):
        cfg = Config(name="run", runs_dir=str(tmp_path), evaluate={"judge": {
            "enabled": True, "endpoint": endpoint, "model": model, "prompts": 6, "per_objective": False}})
        return SimpleNamespace(cfg=cfg, root=root, state=SimpleNamespace(is_main_process=True),
                               step=lambda *a, **kw: None, print_times=lambda: None, path=root.joinpath)

    pipeline._evaluate_and_report(finished_run(judge.url, "fake-judge"), None)
    assert len(judge.seen) == 36 and "LLM judge: run vs base" in (root / "report.md").read_text()
    (root / "report.md").unlink()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    pipeline._evaluate_and_report(finished_run(f"http://127.0.0.1:{closed}/v1", "another-judge"), None)
    assert "judge stopped: " in capsys.readouterr().out and (root / "report.md").exists()
