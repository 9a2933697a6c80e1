"""report.html: the data it embeds, escaping of untrusted text, its size, and the page in a real
headless Chromium (no console errors, a picture that is not blank, a click showing answers).

`python tests/test_report_html.py PNG` writes the screenshot of a demo-sized report (the README's
docs/report-html.png).
"""

import base64
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report import evaluated_run  # (this folder, first on the path under pytest and as a script)
from typer.testing import CliRunner

from paretohqd.cli import app
from paretohqd.compare import write_comparison
from paretohqd.config import Config
from paretohqd.io import write_json, write_parquet
from paretohqd.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
ATTACK = "<script>alert(1)</script>"


def page_data(html: str) -> dict:
    """The JSON the page embeds, read back as the browser does."""
    start = html.index('<script type="application/json" id="report-data">') + len(
        '<script type="application/json" id="report-data">')
    return json.loads(html[start:html.index("</script>", start)])


def demo_run(root: Path) -> Path:
    """A run folder the size of `make demo`'s: 8,400 scored training samples with texts, 5
    preferences and the base model answering 24 prompts in a few hundred characters, stage-1 (16
    per preference) and stage-2 (8 of a generated pool) selections."""
    means = [[3.2, 1.1], [3.0, 2.0], [2.5, 2.6], [1.9, 2.9], [1.2, 3.1]]  # w_helpful 1, .75, ..., 0
    evaluated_run(root, means=means, base=(1.6, 1.7))
    rng = np.random.default_rng(1)
    n = 8400
    cloud = np.clip(rng.multivariate_normal([2.0, 2.0], [[0.5, -0.2], [-0.2, 0.5]], size=n), 0, 4)  # (n, 2)
    cloud[0], cloud[1] = 0.0, 4.0  # the box stays [0, 4]^2, as evaluated_run's bounds.json says
    sentences = ["Start with the basics and take it one step at a time.", "Write down what you want first.",
                 "Ask someone with experience to show you once.", "Be careful not to overdo it in the first week.",
                 "Most people find it easier after a few tries.", "If anything feels unsafe, ask a professional.",
                 "A short checklist keeps you from missing a step.", "Give yourself time: nobody gets it at once."]
    topics = ["bake bread at home", "fix a flat bicycle tyre", "ask my boss for a raise", "learn the guitar",
              "keep houseplants alive", "start running", "write a cover letter", "calm down before an exam"]

    def text(i: int, length: int) -> str:
        return " ".join(sentences[(i * 3 + j) % len(sentences)] for j in range(max(1, length // 45)))

    def question(i: int) -> str:
        return f"\n\nHuman: How can I {topics[i % len(topics)]}? {text(i, 100)}"

    def scored(prefix: str, rewards: np.ndarray, length: int) -> pd.DataFrame:
        return pd.DataFrame({"id": [f"{prefix}{i}" for i in range(len(rewards))],
                             "prompt": [question(i) for i in range(len(rewards))],
                             "response": [text(i + 3, length) for i in range(len(rewards))],
                             "helpful": rewards[:, 0], "harmless": rewards[:, 1]})

    weights = [[1 - i / 4, i / 4] for i in range(5)]

    def selection(prefix: str, rewards: np.ndarray, k: int) -> pd.DataFrame:
        # the top k of w . r per preference: a plausible selection, nearest the ray first
        picks = [np.argsort(-(rewards @ np.array(w)))[:k] for w in weights]
        return pd.DataFrame({"preference_index": np.repeat(np.arange(5), k),
                             "weights": [w for w in weights for _ in range(k)], "id": [f"{prefix}{j}" for p in picks for j in p], "layer": 0, "distance": 0.0})

    write_parquet(scored("s", cloud, 400), root / "data" / "scores.parquet")
    write_parquet(selection("s", cloud, 16), root / "stage1" / "selection.parquet")
    pool = np.clip(rng.normal(2.6, 0.4, size=(160, 2)), 0, 4)  # (160, 2) the stage-1 models' answers
    write_parquet(scored("g", pool, 300), root / "stage2" / "scores.parquet")
    write_parquet(selection("g", pool, 8), root / "stage2" / "selection.parquet")

    responses = pd.read_parquet(root / "evaluate" / "responses.parquet")
    # evaluated_run answers 20 prompts: 4 more, longer texts, and the weights of 5 preferences
    extra = responses[responses["prompt_id"] < "p04"]
    responses = pd.concat([responses, extra.assign(prompt_id=extra["prompt_id"].str.replace("p0", "p2"))],
                          ignore_index=True)
    responses["prompt"] = [f"{question(int(p[1:]))} (question {p})" for p in responses["prompt_id"]]
    responses["response"] = [f"{m} says: {text(i, 350)}" for i, m in enumerate(responses["model"])]
    responses["id"] = responses["model"] + "-" + responses["prompt_id"]
    responses["weights"] = [None if i < 0 else weights[i] for i in responses["preference_index"]]
    write_parquet(responses, root / "evaluate" / "responses.parquet")
    meta = root / "evaluate" / "meta.json"
    write_json({**json.loads(meta.read_text()), "prompts": 24, "preferences": weights}, meta)
    return root


def test_html_embeds_every_model_and_its_answers(tmp_path):
    a = evaluated_run(tmp_path / "a", bootstrap=50)
    b = evaluated_run(tmp_path / "b", means=[[1.5, 3.0], [2.0, 2.5], [3.0, 1.0]], bootstrap=50)
    write_report([a, b])
    html = (tmp_path / "compare-a-b" / "report.html").read_text()
    data = page_data(html)
    assert [m["method"] for m in data["methods"]] == ["a", "b"]
    for m in data["methods"]:
        assert [r["model"] for r in m["models"]] == ["pref-00", "pref-01", "pref-02"] and m["base"]["model"] == "base"
        assert len(m["prompts"]) == 20 and len(m["answers"]) == 4 * 20
        assert {row[0] for row in m["answers"]} == {"base", "pref-00", "pref-01", "pref-02"}
        assert m["selections"] == {}  # evaluated_run keeps no selection files
    assert data["methods"][1]["models"][0]["mean"] == [pytest.approx(1.5), pytest.approx(3.0)]
    lo, hi = data["methods"][1]["models"][0]["ci95"][0]
    assert lo < 1.5 < hi
    row = next(r for r in data["methods"][0]["answers"] if r[0] == "pref-01" and r[1] == 3)
    assert row[2] == "An answer from pref-01 to question 3, in several words." and row[3] is None
    assert row[4:] == [pytest.approx(3.0), pytest.approx(3.0)]  # mean (2, 2) + 1 on odd prompts
    assert data["cloud"]["n"] == 300 and len(data["cloud"]["columns"][0]) == 300
    assert data["box"] == {"lower": [0.0, 0.0], "upper": [4.0, 4.0], "reference": [0.0, 0.0]}
    # report.md's controllability and change tables, and the numbers behind them. The fixture's weights
    # run against its means (w = (1, 0) gets (1, 3)): order tau -1 in both runs
    assert [t["title"] for t in data["tables"]] == ["Controllability and distance to the best front",
                                                    "Change from the base model"]
    assert [r[0] for r in data["tables"][0]["rows"]] == ["a", "b"] and "no evidence" not in data["tables"][0]["rows"][0]
    assert data["tables"][0]["rows"][0][5] == "-1.000 [-1.000, -1.000]"
    assert data["tables"][1]["header"] == ["method", "helpful: change vs base [95%]", "harmless: change vs base [95%]"]
    assert data["tables"][1]["rows"][0] == ["a", "up +2.000 [+2.000, +2.000]", "up +2.000 [+2.000, +2.000]"]
    assert [m["control"]["order_tau"]["value"] for m in data["methods"]] == [-1.0, -1.0]
    assert data["methods"][1]["change_vs_base"]["helpful"]["delta"] == pytest.approx(6.5 / 3)
    assert "<script>" not in html[html.index("report-data"):]  # the data holds no markup at all
    assert "cdn" not in html[:2000].lower() and 'src="http' not in html  # nothing fetched: works offline


def test_untrusted_text_is_escaped(tmp_path):
    a = evaluated_run(tmp_path / "a", bootstrap=0)
    path = a / "evaluate" / "responses.parquet"
    df = pd.read_parquet(path)
    df.loc[df["id"] == "pref-01-2", "response"] = f"Sure: {ATTACK} & more </script><!--"
    df.loc[df["prompt_id"] == "p05", "prompt"] = "\n\nHuman: what does <b>bold</b> do?"
    write_parquet(df, path)
    write_report([a])
    html = (a / "report.html").read_text()
    assert ATTACK not in html and "<b>bold</b>" not in html and "more </script><!--" not in html
    data = page_data(html)
    row = next(r for r in data["methods"][0]["answers"] if r[0] == "pref-01" and r[1] == 2)
    assert row[2] == f"Sure: {ATTACK} & more </script><!--"  # unchanged once parsed
    assert data["methods"][0]["prompts"][5]["text"] == "\n\nHuman: what does <b>bold</b> do?"
    assert data["methods"][0]["models"][0]["ci95"] == [[None, None], [None, None]]  # bootstrap 0: no NaN in JSON


def test_demo_sized_report_is_small_and_carries_the_selections(tmp_path):
    run = demo_run(tmp_path / "demo")
    write_report([run])
    path = run / "report.html"
    # 5 MiB (what `ls -h` and browsers call 5M); Plotly's own JavaScript is 4.6 MiB of it
    assert path.stat().st_size < 5 * 2**20, path.stat().st_size
    data = page_data(path.read_text())
    (m,) = data["methods"]
    assert len(m["prompts"]) == 24 and len(m["answers"]) == 6 * 24
    assert set(m["selections"]) == {"stage1", "stage2"}
    s1, s2 = m["selections"]["stage1"]["preferences"], m["selections"]["stage2"]["preferences"]
    assert sorted(s1) == sorted(s2) == ["0", "1", "2", "3", "4"]
    assert s1["0"]["n"] == 16 and len(s1["0"]["columns"][0]) == 16 and s2["4"]["n"] == 8
    assert len(s1["2"]["texts"]) == 3 and s1["2"]["texts"][0]["response"]
    # preference 0 is w = (1, 0): its first sample is the training set's most helpful one
    scores = pd.read_parquet(run / "data" / "scores.parquet")
    assert s1["0"]["texts"][0]["rewards"][0] == pytest.approx(scores["helpful"].max(), abs=1e-4)
    assert max(s1["0"]["columns"][0]) == pytest.approx(scores["helpful"].max(), abs=1e-3)


def test_no_html_option(tmp_path):
    a = evaluated_run(tmp_path / "a", bootstrap=0)
    write_report([a], html=False)
    assert (a / "report.md").exists() and not (a / "report.html").exists()
    res = CliRunner().invoke(app, ["report", str(a), "--no-html", "--out", str(tmp_path / "x")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "x" / "report.md").exists() and not (tmp_path / "x" / "report.html").exists()
    res = CliRunner().invoke(app, ["report", str(a), "--out", str(tmp_path / "y")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "y" / "report.html").exists()
    # `paretohqd compare` (and `run`) take it from the config's evaluate.html
    b = evaluated_run(tmp_path / "x-b", bootstrap=0)
    write_comparison(Config(name="x", runs_dir=str(tmp_path), evaluate={"html": False}), {"a": a, "b": b})
    assert (tmp_path / "x-compare" / "compare.md").exists() and not (tmp_path / "x-compare" / "report.html").exists()
    write_comparison(Config(name="x", runs_dir=str(tmp_path)), {"a": a, "b": b})
    assert (tmp_path / "x-compare" / "report.html").exists()


# In a real browser --------------------------------------------------------------------------------

class Chromium:
    """Headless Chromium driven over the DevTools protocol (CDP) on its page's websocket."""

    def __init__(self, width: int = 1300, height: int = 1100):
        import websocket  # websocket-client

        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--window-size={width},{height}", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port = self._port(timeout=20)
            pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5))
            url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
            # no Origin header: Chromium refuses websocket clients from origins it was not told to allow
            self.ws = websocket.create_connection(url, timeout=20, suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self.next_id, self.events = 0, []

    def _port(self, timeout: float) -> int:
        """The port Chromium chose, from the DevToolsActivePort file it writes once listening."""
        marker = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its debugging port")

    def call(self, method: str, **params) -> dict:
        """Send a command, keep the events that arrive before its answer, return its result."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def open(self, path: Path) -> None:
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        url = path.resolve().as_uri()
        nav = self.call("Page.navigate", url=url)
        if "errorText" in nav:
            raise RuntimeError(f"{url}: {nav['errorText']}")
        # poll rather than wait for Page.loadEventFired: about:blank's own load event may still be on its way
        deadline = time.monotonic() + 20
        while self.evaluate(f"location.href !== {json.dumps(url)} || document.readyState !== 'complete'"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load: {self.evaluate('[location.href, document.readyState]')}")
            time.sleep(0.05)

    def errors(self) -> list:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        self.call("Runtime.evaluate", expression="0")  # let pending events arrive
        return [m for m in self.events
                if m.get("method") == "Runtime.exceptionThrown"
                or (m.get("method") == "Runtime.consoleAPICalled" and m["params"]["type"] == "error")
                or (m.get("method") == "Log.entryAdded" and m["params"]["entry"]["level"] == "error")]

    def click(self, x: float, y: float) -> None:
        """A real left click at page pixel (x, y), after moving there (Plotly hovers, then clicks)."""
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        self.proc.kill()  # this Chromium's own process (its children follow when it goes)
        self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image  # matplotlib's own dependency

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)  # (H, W, 3)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                    "(apt-get install -y chromium; .ci/run installs it)")
def test_report_in_headless_chromium(tmp_path):
    """The demo-sized page loads without errors, draws something, and a click shows answers."""
    run = demo_run(tmp_path / "demo")
    df = pd.read_parquet(run / "evaluate" / "responses.parquet")
    df.loc[(df["model"] == "pref-03") & (df["prompt_id"] == "p01"), "response"] = f"Look: {ATTACK}"
    write_parquet(df, run / "evaluate" / "responses.parquet")
    write_report([run])
    three = evaluated_run(tmp_path / "three", objectives=("helpful", "harmless", "humor"), bootstrap=50,
                          means=[[1.0, 3.0, 2.0], [2.0, 2.0, 2.0], [3.0, 1.0, 2.5]], base=(1.0, 1.0, 1.0))
    write_report([three])
    started = time.monotonic()
    browser = Chromium()
    try:
        browser.open(run / "report.html")
        assert browser.evaluate("document.querySelectorAll('.panel .main-svg').length") >= 1  # Plotly drew
        png = browser.screenshot()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        img = pixels(png)
        assert img.shape[0] > 500 and img.std() > 20  # not a blank page
        assert browser.evaluate("window.paretohqd.state.model") == "pref-00"  # the first model, to start
        tables = browser.evaluate("document.getElementById('indicators').textContent")
        assert "Controllability and distance to the best front" in tables and "Change from the base model" in tables
        assert browser.evaluate("document.querySelectorAll('#indicators table.indicators tbody tr').length") == 2
        # a mouse click on pref-03's point: where Plotly drew its mean in the first panel
        x, y = browser.evaluate(
            "(() => { const d = document.getElementById('panel-0'), L = d._fullLayout, box = d.getBoundingClientRect();"
            " const m = window.paretohqd.data.methods[0].models.find(r => r.model === 'pref-03');"
            " return [box.left + L._size.l + L.xaxis.l2p(m.mean[0]), box.top + L._size.t + L.yaxis.l2p(m.mean[1])]; })()")
        browser.click(x, y)
        assert browser.evaluate("window.paretohqd.state.model") == "pref-03"
        header = browser.evaluate("document.querySelector('#answers thead').textContent")
        assert "demo · pref-03 (0.25, 0.75)" in header and "demo · base (untuned)" in header
        body = browser.evaluate("document.querySelector('#answers tbody').textContent")
        assert f"Look: {ATTACK}" in body  # the answer, shown as text
        assert browser.evaluate("document.querySelectorAll('#answers script').length") == 0
        assert "pref-02 says" not in body and "base says" in body
        assert "stage1: 16 samples" in browser.evaluate("document.getElementById('selection').textContent")
        # stage-1 and stage-2 picks of preference 3 highlighted: the traces after the fronts and the base
        counts = browser.evaluate("document.getElementById('panel-0').data.slice(-3).map(t => t.x.length)")
        assert counts == [16, 8, 1]
        # a third model beside them, then the filter
        browser.evaluate("const o = document.getElementById('other'); o.value = JSON.stringify([0, 'pref-00']);"
                         "o.dispatchEvent(new Event('change'))")
        assert "demo · pref-00 (1, 0)" in browser.evaluate("document.querySelector('#answers thead').textContent")
        browser.evaluate("const f = document.getElementById('filter'); f.value = 'question p01';"
                         "f.dispatchEvent(new Event('input'))")
        assert browser.evaluate("document.querySelectorAll('#answers tbody tr').length") == 1
        assert browser.evaluate("document.getElementById('count').textContent") == "1 of 24 prompts"
        assert browser.errors() == []
        assert not [m for m in browser.events if m.get("method") == "Page.javascriptDialogOpening"]  # no alert()
        # three objectives: a panel per pair, as in front.png
        browser.open(three / "report.html")
        axes = browser.evaluate("[0, 1, 2].map(p => { const l = document.getElementById('panel-' + p).layout;"
                                " return [l.xaxis.title.text, l.yaxis.title.text]; })")
        assert axes == [["helpful", "harmless"], ["helpful", "humor"], ["harmless", "humor"]]
        assert browser.evaluate("window.paretohqd.select('pref-01', 'three')") is True
        header = browser.evaluate("document.querySelector('#answers thead').textContent")
        assert "three · pref-01 (0.5, 0.5, 0)" in header
        assert browser.errors() == []
    finally:
        browser.close()
    assert time.monotonic() - started < 30


def write_screenshot(out: Path) -> None:
    """Build a demo-sized report in a temporary folder and save its page as `out`, a PNG."""
    with tempfile.TemporaryDirectory() as tmp:
        run = demo_run(Path(tmp) / "demo")
        write_report([run])
        browser = Chromium(width=1400, height=1150)
        try:
            browser.open(run / "report.html")
            browser.evaluate("window.paretohqd.select('pref-01', 'demo');"
                             "const o = document.getElementById('other'); o.value = JSON.stringify([0, 'pref-04']);"
                             "o.dispatchEvent(new Event('change'))")
            png = browser.screenshot()
        finally:
            browser.close()
    from PIL import Image

    # 256 colours are plenty for a page of flat colours, and keep the PNG small for the repository
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(out, optimize=True)


if __name__ == "__main__":
    write_screenshot(Path(sys.argv[1]))
