"""`paretohqd serve` under load: 16 chat requests over 4 preferences sent by 8 concurrent clients,
against the same 16 sent one at a time, to the same server (greedy, so both must give the same
answers). Prints tokens/s both ways side by side, the speed-up last with its target.

Model: by default a tiny run folder built here (a random 2-layer Llama with the real SmolLM2
tokenizer, random LoRA adapters for 4 preferences, as tests/test_serve.py builds it); `--run RUN`
serves a real finished run instead (its first 4 preferences). Offline, CPU.

    python benchmarks/bench_serve.py [--run runs/demo] [--max-tokens 32] [--window 0.03] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from paretohqd.testing import tiny_llama

TARGET = 3.0
"""Concurrent over sequential tokens/s this benchmark asks for."""

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
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--window", type=float, default=0.03, help="the server's batching window, seconds")
    ap.add_argument("--threads", type=int, help="torch threads (default torch's own); on a shared machine 1 "
                    "avoids threads waiting on each other for cores others hold")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from openai import OpenAI

    from paretohqd.serve import Running, create_app

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


if __name__ == "__main__":
    main()
