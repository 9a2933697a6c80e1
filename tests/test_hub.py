"""`paretohqd export RUN --push-to-hub OWNER/NAME` against a stand-in for the Hugging Face Hub on
loopback: huggingface_hub's own HTTP calls (create_repo, repo_info, validate-yaml, preupload,
commit) answered by `HubStub`, which keeps what is committed. The real Hub was not used. The stub
answers every file's upload mode "regular" (sent inside the commit, base64), so the LFS / Xet
transfer the real Hub asks for large files is not exercised."""

import ast
import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import huggingface_hub
import pytest
import yaml
from huggingface_hub import ModelCard
from typer.testing import CliRunner

from paretohqd.cli import app
from paretohqd.io import write_json
from test_use import make_run

TOKEN = "hf_stubSECRETtoken0123456789"
MEANS = {"pref-00": (0.25, 1.5), "pref-01": (0.75, 0.5), "pref-02": (1.25, -0.5)}  # (helpful, harmless)


class HubStub:
    """The Hub's endpoints that huggingface_hub 2.4 calls for create_repo, repo_info and
    create_commit, for user `me` with token `TOKEN`; `repos` holds each repository's privacy, files
    and commits; `requests` every (method, path) asked; `fail_commit` an HTTP status for the commit."""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_commit: int | None = None
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._answer(*stub.route("GET", self.path, self.headers, b""))

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._answer(*stub.route("POST", self.path, self.headers, body))

            def _answer(self, status, payload, headers):
                data = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def route(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict, dict]:
        path = path.split("?")[0]
        self.requests.append((method, path))
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, {"error": "Invalid credentials in Authorization header"}, {}
        parts = path.strip("/").split("/")
        if path == "/api/repos/create":
            return self.create(json.loads(body))
        if path == "/api/validate-yaml":
            text = json.loads(body)["content"]
            yaml.safe_load(text.split("---")[1])  # the front matter parses
            return 200, {"errors": [], "warnings": []}, {}
        repo_id = "/".join(parts[2:4])
        if repo_id not in self.repos:
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        repo = self.repos[repo_id]
        if method == "GET" and len(parts) == 4:
            return 200, {"id": repo_id, "private": repo["private"], "sha": "0" * 40}, {}
        if parts[0] != "api" or parts[2] != "me":
            return 403, {"error": f"You don't have the rights to write to {repo_id}"}, {}
        if parts[4] == "preupload":
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                   for f in files]}, {}
        if parts[4] == "commit":
            if self.fail_commit:
                return self.fail_commit, {"error": "Internal Error - We're working hard to fix this"}, {}
            return self.commit(repo_id, repo, body)
        return 404, {"error": f"stub: no route {method} {path}"}, {}

    def create(self, payload: dict) -> tuple[int, dict, dict]:
        repo_id = f"{payload['organization']}/{payload['name']}"
        if payload["organization"] != "me":
            return 403, {"error": f"You don't have the rights to create a model under the namespace "
                                  f"\"{payload['organization']}\""}, {}
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}, {}
        self.repos[repo_id] = {"private": payload.get("visibility") == "private", "files": {}, "commits": []}
        return 200, {"url": f"{self.url}/{repo_id}"}, {}

    def commit(self, repo_id: str, repo: dict, body: bytes) -> tuple[int, dict, dict]:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        files = {}
        for item in lines[1:]:
            if item["key"] != "file":
                return 400, {"error": f"stub: {item['key']} not supported"}, {}
            files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        repo["files"].update(files)  # all at once, as the Hub applies a commit
        repo["commits"].append(lines[0]["value"]["summary"])
        oid = f"{len(repo['commits']):040x}"
        return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid}, {}


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_policy):
    """Two objectives, 3 LoRA preferences, and a report.json with each one's mean rewards."""
    root = tmp_path_factory.mktemp("hub") / "tiny-run"
    make_run(root, tiny_policy, ["helpful", "harmless"], 3)
    rows = [{"model": m, "n": 4, "mean": {"helpful": h, "harmless": s},
             "ci95": {"helpful": [h - 0.5, h + 0.5], "harmless": [s - 0.5, s + 0.5]}, "collapse_rate": 0.0}
            for m, (h, s) in MEANS.items()]
    write_json({"methods": [{"folder": str(root), "models": rows, "hypervolume": 0.5}]}, root / "report.json")
    return root


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The stub as huggingface_hub's endpoint, online, the token in HF_TOKEN and none stored."""
    stub = HubStub()
    monkeypatch.setenv("HF_ENDPOINT", stub.url)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", stub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield stub
    stub.close()


def _push(run, *args):
    res = CliRunner().invoke(app, ["export", str(run), *args])
    assert TOKEN not in res.output
    return res


def _front_matter(card: bytes) -> dict:
    return yaml.safe_load(card.decode().split("---\n")[1])


def test_push_uploads_one_folder_per_preference_in_one_commit(run, hub):
    res = _push(run, "--push-to-hub", "me/tiny-run")
    assert res.exit_code == 0, res.output
    assert "pushed: " in res.output and "me/tiny-run/commit/" in res.output
    repo = hub.repos["me/tiny-run"]
    assert len(repo["commits"]) == 1 and repo["private"] is False
    files = repo["files"]
    assert {p.split("/")[0] for p in files if "/" in p} == {"pref-00", "pref-01", "pref-02"}
    assert {p for p in files if "/" not in p} == {"README.md", "export.json", "lora-modules.json", "vllm-serve.sh"}
    for m in MEANS:
        assert files[f"{m}/adapter_model.safetensors"] == (run / "stage1" / m / "adapter_model.safetensors").read_bytes()
        card = files[f"{m}/README.md"].decode()
        assert f'"me/tiny-run", subfolder="{m}"' in card
        ast.parse(card.split("```python\n")[1].split("```")[0])  # the loading code is Python
    assert not any(TOKEN.encode() in data for data in files.values())
    assert [r for r in hub.requests if r[0] == "POST" and "/commit/" in r[1]] == [("POST", "/api/models/me/tiny-run/commit/main")]


def test_card_metadata_parses_and_its_model_index_is_the_report(run, hub):
    assert _push(run, "--push-to-hub", "me/tiny-run").exit_code == 0
    files = hub.repos["me/tiny-run"]["files"]
    top = _front_matter(files["README.md"])
    assert top["library_name"] == "peft" and "base_model" not in top  # a local policy: no Hub id to name
    weights = {"pref-00": "helpful 0, harmless 1", "pref-01": "helpful 0.5, harmless 0.5",
               "pref-02": "helpful 1, harmless 0"}
    assert [e["name"] for e in top["model-index"]] == [f"{m} ({weights[m]})" for m in MEANS]
    for m, entry in zip(MEANS, top["model-index"]):
        (result,) = entry["results"]
        assert result["task"]["type"] == "text-generation"
        got = {x["config"]: (x["type"], x["value"], x["args"]["ci95"]) for x in result["metrics"]}
        assert got == {o: (f"rm-{o}", v, [v - 0.5, v + 0.5]) for o, v in zip(("helpful", "harmless"), MEANS[m])}
        own = ModelCard(files[f"{m}/README.md"].decode()).data  # huggingface_hub reads it back the same
        assert own.model_name == entry["name"] and [r.metric_value for r in own.eval_results] == list(MEANS[m])


def test_dry_run_lists_the_files_and_sends_nothing(run, hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # any request would raise
    monkeypatch.delenv("HF_TOKEN")
    res = _push(run, "--push-to-hub", "me/tiny-run", "--dry-run")
    assert res.exit_code == 0, res.output
    assert hub.requests == [] and hub.repos == {}
    assert "pref-01/adapter_model.safetensors" in res.output and "lora-modules.json" in res.output
    size = (run / "stage1" / "pref-01" / "adapter_model.safetensors").stat().st_size
    assert f"{size:,}" in res.output and "nothing was sent" in res.output
    meta = yaml.safe_load(res.output.split("metadata (README.md):\n")[1].split("dry run:")[0])
    assert [e["name"].split()[0] for e in meta["model-index"]] == list(MEANS)


def test_private_creates_a_private_repo_and_refuses_a_public_one(run, hub):
    assert _push(run, "--push-to-hub", "me/secret", "--private").exit_code == 0
    assert hub.repos["me/secret"]["private"] is True
    hub.repos["me/open"] = {"private": False, "files": {}, "commits": []}
    res = _push(run, "--push-to-hub", "me/open", "--private")
    assert res.exit_code == 2 and "me/open: exists and is public" in res.output
    assert hub.repos["me/open"]["commits"] == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case, message", [
    ("bad id", "--push-to-hub 'me/bad name': "),
    ("not owner/name", "--push-to-hub 'tiny-run': not a repository id; give OWNER/NAME"),
    ("no token", "me/tiny-run: no Hugging Face token found; set HF_TOKEN"),
    ("oidc fails", "me/tiny-run: no Hugging Face token: HF_OIDC_RESOURCE is set but no OIDC id token"),
    ("wrong token", "me/tiny-run: the Hub refused the token (401: Invalid credentials"),
    ("someone else's", "someone/models: this token may not write there (403: You don't have the rights"),
    ("no network", "me/tiny-run: cannot reach http://127.0.0.1:"),
    ("offline", "me/tiny-run: HF_HUB_OFFLINE is set"),
    ("commit fails", "me/tiny-run: the Hub answered (500: Internal Error"),
])
def test_hub_errors_are_one_line_naming_the_repo_and_the_fix(run, hub, monkeypatch, case, message):
    repo = {"bad id": "me/bad name", "not owner/name": "tiny-run", "someone else's": "someone/models"}.get(case, "me/tiny-run")
    hub.repos["someone/models"] = {"private": False, "files": {}, "commits": []}
    if case == "no token":
        monkeypatch.delenv("HF_TOKEN")
    elif case == "oidc fails":  # CI's Trusted Publishers asked for, outside a CI that mints its id token
        monkeypatch.setenv("HF_OIDC_RESOURCE", "me/tiny-run")
        monkeypatch.delenv("HF_OIDC_ID_TOKEN", raising=False)
        monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    elif case == "wrong token":
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    elif case == "no network":
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    elif case == "offline":
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    elif case == "commit fails":
        hub.fail_commit = 500
    res = _push(run, "--push-to-hub", repo)
    assert res.exit_code == 2, res.output
    assert res.output.startswith(f"error: {message}") and res.output.count("\n") == 1, res.output
    if case in ("bad id", "not owner/name", "no token", "oidc fails"):
        assert hub.requests == []  # refused before anything is sent (or exported)
    assert all(r["commits"] == [] for r in hub.repos.values())  # nothing half-pushed


def test_push_options_need_a_destination(run, hub):
    for args, message in [([], "nowhere to export to: give --out DIR"),
                          (["--out", "x", "--dry-run"], "--dry-run is an option of --push-to-hub")]:
        res = _push(run, *args)
        assert res.exit_code == 2 and res.output.startswith(f"error: {message}") and res.output.count("\n") == 1


def test_card_metadata_names_hub_ids_and_leaves_local_paths_out():
    """The Hub refuses a card whose base_model or datasets names no repository: local paths stay out
    of the metadata (the text states them); the reward model is the metric, a local one by its folder."""
    from types import SimpleNamespace

    from paretohqd.config import Config
    from paretohqd.export import card_metadata, eval_results

    cfg = Config(policy={"model": "HuggingFaceTB/SmolLM2-135M-Instruct"},
                 data={"sources": ["Anthropic/hh-rlhf", "/data/mine", {"path": "me/pairs", "format": "pairs"}]},
                 rewards={"models": {"helpful": "OpenAssistant/rm", "harmless": "/models/rm-harmless"}})
    r = SimpleNamespace(cfg=cfg, objectives=["helpful", "harmless"])
    row = {"n": 7, "mean": {"helpful": 1.5, "harmless": -2.0}, "ci95": {"helpful": [1.0, 2.0], "harmless": [None, None]}}
    meta = yaml.safe_load(card_metadata(r, {"pref-00 (helpful 1, harmless 0)": eval_results(r, row)}))
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["datasets"] == ["Anthropic/hh-rlhf", "me/pairs"]
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"]["type"] == "Anthropic/hh-rlhf,mine,me/pairs" and "7 held-out" in result["dataset"]["name"]
    assert [(m["type"], m["value"], m["args"]) for m in result["metrics"]] == \
        [("OpenAssistant/rm", 1.5, {"prompts": 7, "ci95": [1.0, 2.0]}), ("rm-harmless", -2.0, {"prompts": 7})]
    local = Config(policy={"model": "/models/policy"}, data={"sources": ["/data/mine"]})
    assert "base_model" not in yaml.safe_load(card_metadata(SimpleNamespace(cfg=local), {}))


def test_ric_run_is_one_folder_and_its_card_indexes_every_preference(tmp_path, tiny_policy, hub):
    """RiC: one model answers every preference (its prompt tag), so the repository holds one folder
    and its card's model-index has each evaluated preference once."""
    root = tmp_path / "ric"
    make_run(root, tiny_policy, ["helpful", "harmless"], 3, method="ric")
    rows = [{"model": m, "n": 4, "mean": {"helpful": h, "harmless": s},
             "ci95": {"helpful": [None, None], "harmless": [None, None]}, "collapse_rate": 0.0}
            for m, (h, s) in MEANS.items()]
    write_json({"methods": [{"folder": str(root), "models": rows}]}, root / "report.json")
    assert _push(root, "--push-to-hub", "me/ric").exit_code == 0
    files = hub.repos["me/ric"]["files"]
    assert {p.split("/")[0] for p in files if "/" in p} == {"ric"}
    entries = _front_matter(files["README.md"])["model-index"]
    assert [e["name"].split()[0] for e in entries] == list(MEANS)
    assert [[m["value"] for m in e["results"][0]["metrics"]] for e in entries] == [list(v) for v in MEANS.values()]
