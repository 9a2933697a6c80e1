"""`paretohqd serve` under load: 16 chat requests over 4 preferences sent by 8 concurrent clients,
against the same 16 sent one at a time, to the same server (greedy, so both must give the same
answers). Prints tokens/s both ways side by side, the speed-up last with its target.

`--soak`: a server process started here (`paretohqd serve --max-queue 16`, on 127.0.0.1) and 32
client threads asking for random preferences `w=a,1-a` for `--seconds` (60): prints requests
served, 429s, p50/p99 latency and the server's peak RSS, and fails (exit 1) if its peak RSS in the
second half exceeds the first half's by more than `RSS_GROWTH` (a mix kept per distinct `w` would).

Model: by default a tiny run folder built here (a random 2-layer Llama with the real SmolLM2
tokenizer, random LoRA adapters for 4 preferences, as tests/test_serve.py builds it); `--run RUN`
serves a real finished run instead (its first 4 preferences). Offline, CPU.

    python benchmarks/bench_serve.py [--run runs/demo] [--max-tokens 32] [--window 0.03] [--threads 1]
    python benchmarks/bench_serve.py --soak [--seconds 60] [--clients 32] [--threads 1]"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from paretohqd.testing import tiny_llama

TARGET = 3.0
"""Concurrent over sequential tokens/s this benchmark asks for."""
RSS_GROWTH = 64 * 2**20
"""`--soak`: the most the server's peak RSS over the second half of the run may exceed its peak
over the first half (bytes): allocator noise, not a model or mix kept per distinct preference."""
REPO = Path(__file__).resolve().parents[1]

PROMPTS = ["What is a llama?", "How do I bake bread?", "Tell me a joke.", "Name a colour.", "Why is the sky blue?",
           "Hi", "What is 2 + 2?", "Write a haiku about the sea.", "How do magnets work?", "Recommend a book.",
           "What should I cook tonight?", "Explain gravity simply.", "Is coffee healthy?", "Say something kind.",
           "What is the capital of France?", "How do I learn to swim?"]


def tiny_run(folder: Path) -> Path:
    """A finished 2-objective run with 4 random LoRA preference models on a random 2-layer Llama."""
    from paretohqd.config import Config, PolicyConfig, dump_config
    from paretohqd.io import write_json
    from paretohqd.pareto.preferences import simplex_grid
    from paretohqd.policy.load import OFFLINE_SMOLLM2, load_tokenizer
    from paretohqd.policy.sft import build_model

    tok = load_tokenizer(OFFLINE_SMOLLM2)
    policy = tiny_llama(folder / "tiny-llama", tok)
    root = folder / "bench"
    models = {}
    for name in ("helpful", "harmless"):  # stand-ins: nothing here scores
        (folder / f"rm-{name}").mkdir()
        (folder / f"rm-{name}" / "config.json").write_text("{}")
        models[name] = str(folder / f"rm-{name}")
    cfg = Config(name="bench", runs_dir=str(folder), seed=3, policy={"model": str(policy)}, rewards={"models": models},
                 select={"preferences": 4, "k": 2}, stage2={"enabled": False},
                 train={"lora_r": 2, "lora_alpha": 4, "lora_targets": ["q_proj", "v_proj"]})
    root.mkdir()
    (root / "config.yaml").write_text(dump_config(cfg))
    for i in range(len(simplex_grid(2, 4))):
        model = build_model(PolicyConfig(model=str(policy)), cfg.train)
        torch.manual_seed(i)
        for name, p in model.named_parameters():
            if "lora_B" in name:  # fresh LoRA B is zero; make each adapter change the model
                torch.nn.init.normal_(p, std=0.5)
        out = root / "stage1" / f"pref-{i:02d}"
        model.save_pretrained(out)
        write_json({"steps": 0}, out / "train.json")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a finished run folder (default: a tiny one built here)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--clients", type=int, help="concurrent clients (default 8; --soak 32)")
    ap.add_argument("--window", type=float, default=0.03, help="the server's batching window, seconds")
    ap.add_argument("--threads", type=int, help="torch threads (default torch's own); on a shared machine 1 "
                    "avoids threads waiting on each other for cores others hold")
    ap.add_argument("--soak", action="store_true", help="the soak test (see above) instead")
    ap.add_argument("--seconds", type=float, default=60.0, help="--soak: how long the clients ask")
    args = ap.parse_args()
    if args.soak:
        sys.exit(soak(args))
    args.clients = args.clients or 8
    if args.threads:
        torch.set_num_threads(args.threads)

    from openai import OpenAI

    from paretohqd.serve import create_app

    Running = _tests_module("serving").Running

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or tiny_run(Path(tmp))
        app = create_app(run, cache_size=4, window=args.window)
        prefs = app.state.models.names[:4]
        requests = [(prefs[i % len(prefs)], PROMPTS[i % len(PROMPTS)]) for i in range(16)]
        with Running(app) as port:
            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)

            def ask(req):
                model, prompt = req
                r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                   temperature=0, max_tokens=args.max_tokens)
                return r.choices[0].message.content, r.usage.completion_tokens

            for model in prefs:  # load every model once: the timings measure answering, not loading
                ask((model, "warm up"))
            batches = app.state.batcher.batches
            t0, n0 = time.perf_counter(), len(batches)
            one_by_one = [ask(r) for r in requests]
            t_seq, seq_batches = time.perf_counter() - t0, batches[n0:]
            t0, n0 = time.perf_counter(), len(batches)
            with ThreadPoolExecutor(args.clients) as pool:
                together = list(pool.map(ask, requests))
            t_con, con_batches = time.perf_counter() - t0, batches[n0:]

    tokens = sum(n for _, n in one_by_one)
    same = [a for a, _ in one_by_one] == [a for a, _ in together]
    seq, con = tokens / t_seq, sum(n for _, n in together) / t_con
    print(f"run: {run if args.run else 'tiny (random 2-layer Llama, SmolLM2 tokenizer)'}; 16 requests over "
          f"{', '.join(prefs)}; greedy, max_tokens {args.max_tokens}; torch threads {torch.get_num_threads()}")
    print(f"{'':<28}{'one at a time':>16}{f'{args.clients} clients':>16}")
    print(f"{'wall (s)':<28}{t_seq:>16.2f}{t_con:>16.2f}")
    print(f"{'completion tokens':<28}{tokens:>16}{sum(n for _, n in together):>16}")
    print(f"{'generate batches (sizes)':<28}{len(seq_batches):>16}{str(con_batches):>16}")
    print(f"{'tokens/s':<28}{seq:>16.1f}{con:>16.1f}")
    print(f"same answers: {same}")
    print(f"speed-up {con / seq:.2f}x (target >= {TARGET:g}x)")


def _tests_module(name: str):
    """A module of tests/ (the in-process server harness lives there), loaded by its path."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def soak(args) -> int:
    """`--clients` (32) threads for `--seconds` against a server process; 0 if its RSS stayed bounded."""
    clients = args.clients or 32
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or tiny_run(Path(tmp))
        with socket.socket() as s:  # a free loopback port for the server
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or 1)}
        with open(Path(tmp) / "server.log", "w") as log:
            server = subprocess.Popen([sys.executable, "-m", "paretohqd", "serve", str(run), "--port", str(port),
                                       "--max-queue", "16", "--batch-window", str(args.window)],
                                      cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                url = f"http://127.0.0.1:{port}/v1"
                _wait_up(server, url)
                rss, results = _rss_while(server.pid, lambda: _clients(url, clients, args.seconds, args.max_tokens))
                peak = _status(server.pid, "VmHWM")
            finally:
                server.terminate()
                server.wait(30)
    served = sorted(t for code, t, _ in results if code == 200)
    first, second = ([r for t, r in rss if (t < args.seconds / 2) == half] or [0] for half in (True, False))
    growth = max(second) - max(first)
    other = sum(code not in (200, 429) for code, _, _ in results)
    print(f"soak: {clients} clients, random w=a,1-a, greedy, max_tokens {args.max_tokens}, {args.seconds:g} s; "
          f"server --max-queue 16 --cache 4, torch threads {args.threads or 1}")
    print(f"requests served {len(served)} ({len(served) / args.seconds:.1f}/s) for "
          f"{len({w for code, _, w in results if code == 200})} distinct w, "
          f"429s {sum(code == 429 for code, _, _ in results)}, other errors {other}")
    if served:
        p99 = served[min(len(served) - 1, int(len(served) * 0.99))]
        print(f"latency of the served: p50 {served[len(served) // 2]:.2f} s, p99 {p99:.2f} s")
    print(f"server RSS: peak {peak / 2**20:.0f} MiB; peak in the first half {max(first) / 2**20:.0f} MiB, "
          f"in the second {max(second) / 2**20:.0f} MiB: growth {growth / 2**20:.1f} MiB "
          f"(bound {RSS_GROWTH / 2**20:.0f} MiB)")
    ok = growth <= RSS_GROWTH and other == 0 and bool(served)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def _wait_up(server: subprocess.Popen, url: str) -> None:
    import httpx2 as httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/models", timeout=5).status_code == 200:
                # one answer loads the model: the clock and the RSS watch start after it
                httpx.post(f"{url}/chat/completions", timeout=300, json={
                    "model": "w=0.5,0.5", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not answer within 300 s")


def _clients(url: str, n: int, seconds: float, max_tokens: int) -> list[tuple[int, float, str]]:
    """`n` threads asking for random preferences until `seconds` have passed: (status, seconds,
    model) each."""
    import httpx2 as httpx

    results, end = [], time.monotonic() + seconds

    def client(i: int) -> None:
        rng = random.Random(i)
        with httpx.Client(timeout=600) as http:
            while time.monotonic() < end:
                a = round(rng.random(), 4)  # mostly distinct: the server rounds them to 1e-3
                body = {"model": f"w={a:g},{round(1 - a, 4):g}",
                        "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
                        "temperature": 0, "max_tokens": max_tokens}
                t0 = time.monotonic()
                try:
                    code = http.post(f"{url}/chat/completions", json=body).status_code
                except httpx.TransportError:
                    code = -1
                results.append((code, time.monotonic() - t0, body["model"]))
                if code == 429:
                    time.sleep(0.2)  # not Retry-After's whole second: keep the queue full

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _rss_while(pid: int, work):
    """(seconds since start, RSS bytes) of process `pid` every 0.5 s while `work()` runs, and its result."""
    samples, done, t0 = [], threading.Event(), time.monotonic()

    def watch():
        while not done.wait(0.5):
            samples.append((time.monotonic() - t0, _status(pid, "VmRSS")))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = work()
    finally:
        done.set()
        watcher.join()
    return samples, result


def _status(pid: int, key: str) -> int:
    """A /proc/PID/status size (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    main()
