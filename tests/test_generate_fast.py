"""The generation engines: the `hf` path (LoRA merged into the weights, prompts batched by length,
our decoding loop) answers greedily exactly as the unmerged PEFT model answering each prompt alone,
rows that end leave the batch without changing the others, rows of one batch may use different
adapters; answers come back
in input order; a resumed generation equals an uninterrupted one; `backend: vllm` refuses in one
line where it cannot run, and (GPU only) answers as the `hf` path does."""

import importlib.util
from pathlib import Path

import pytest
import torch

from paretohqd.config import Config, ConfigError, GenerateConfig, PolicyConfig, TrainConfig
from paretohqd.policy import generate as gen
from paretohqd.policy.generate import answer, generate, load_for_generation
from paretohqd.policy.prompts import prompt_ids, prompt_text
from paretohqd.testing import tiny_llama

WORDS = "the a llama river stone of to why how many green under".split()
# mixed lengths, so the length-sorted batches differ from the input order's
CONVERSATIONS = [[{"role": "user", "content": " ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(n))}]
                 for i, n in enumerate([3, 17, 1, 9, 25, 6, 12])]


def _adapter(policy: str, folder: Path, *, seed: int, std: float = 0.5) -> Path:
    """A LoRA adapter on every linear layer with random nonzero B (so merging it changes answers)."""
    from peft import LoraConfig, get_peft_model

    from paretohqd.policy.load import load_policy

    torch.manual_seed(seed)
    model = get_peft_model(load_policy(policy), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                           task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=std)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter(tiny_policy, tmp_path_factory) -> Path:
    return _adapter(tiny_policy, tmp_path_factory.mktemp("adapter"), seed=1)


def _one_by_one(model, tok, conversations, max_new_tokens: int) -> list[str]:
    """The plain reference: `model.generate` greedily on each prompt alone (no padding, no merge)."""
    out = []
    with torch.inference_mode():
        for c in conversations:
            enc = tok(prompt_text(tok, c, "chat"), return_tensors="pt", add_special_tokens=False)
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=[tok.eos_token_id])[0, enc["input_ids"].shape[1]:]  # (new,)
            out.append(tok.decode(ids, skip_special_tokens=True).strip())  # as `cut_at_stop` leaves it
    return out


def _ids_by_row(answers: dict[int, list[int]], pad: int):
    """An `on_tokens` callback that keeps each conversation's new token ids (pads dropped)."""
    def on_tokens(indices: list[int], tokens: list[int]) -> None:
        for i, t in zip(indices, tokens):
            if t != pad:
                answers.setdefault(i, []).append(t)
    return on_tokens


# bf16 keeps 8 significant bits: a logit of this 2-layer model (range ~1.1 over the vocabulary)
# moves by up to ~0.017 between the bf16 merged model and the float32 unmerged one, and its top two
# logits are often closer than that (0.0006 seen), so greedy answers may part at a near-tie. What
# holds: every token the bf16 path picks is within 2 x that error of the exact model's best logit.
BF16_LOGIT_TOL = 0.05  # x the logit range (max - min) at that position; 3x the error measured


def assert_greedy_within_bf16(reference, tok, conversations, rows: dict[int, list[int]]) -> None:
    """Each row's tokens are (near-)greedy choices of the float32 `reference`: at every step the
    chosen token's logit is within 2 x BF16_LOGIT_TOL x range of the best one. A wrong adapter,
    cache or row order picks tokens ~0.5 x range below the best, far outside it."""
    for i, c in enumerate(conversations):
        prompt, new = prompt_ids(tok, c, "chat"), rows[i]
        with torch.inference_mode():
            logits = reference(torch.tensor([prompt + new])).logits[0, len(prompt) - 1:-1].float()  # (new, V)
        best, chosen = logits.max(-1).values, logits[torch.arange(len(new)), torch.tensor(new)]
        span = logits.max(-1).values - logits.min(-1).values  # (new,)
        assert ((best - chosen) <= 2 * BF16_LOGIT_TOL * span).all(), (i, (best - chosen).max().item())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_greedy_fast_path_answers_as_the_unmerged_adapter_alone(tiny_policy, adapter, smol_tokenizer, dtype):
    """float32: the same answers exactly. bfloat16 (what `auto` picks on an AMX / Zen 4 CPU or a
    GPU): merging rounds W + BA to bf16, so answers may part at near-tied logits; every token is
    still the exact model's greedy choice within bf16's error."""
    from peft import PeftModel

    from paretohqd.policy.load import load_policy

    cfg = GenerateConfig(temperature=0, max_new_tokens=12, batch_size=3)
    fast = load_for_generation(PolicyConfig(model=tiny_policy), adapter, dtype=dtype)
    assert not any("lora" in n for n, _ in fast.named_parameters())  # merged: no LoRA matmul per token
    assert next(fast.parameters()).dtype == getattr(torch, dtype)
    rows: dict[int, list[int]] = {}
    answers, stats = generate(fast, smol_tokenizer, CONVERSATIONS, cfg, seed=0, progress=False,
                              on_tokens=_ids_by_row(rows, smol_tokenizer.pad_token_id))
    peft = PeftModel.from_pretrained(load_policy(tiny_policy), str(adapter)).eval()  # float32, unmerged
    if dtype == "float32":
        assert answers == _one_by_one(peft, smol_tokenizer, CONVERSATIONS, 12)
    else:
        assert_greedy_within_bf16(peft, smol_tokenizer, CONVERSATIONS, rows)
    # the adapter matters: the base model answers otherwise
    assert answers != _one_by_one(load_policy(tiny_policy).eval(), smol_tokenizer, CONVERSATIONS, 12)
    assert stats["new_tokens"] > 0


def test_answers_come_back_in_input_order(tiny_policy, adapter, smol_tokenizer):
    model = load_for_generation(PolicyConfig(model=tiny_policy), adapter)
    cfg = GenerateConfig(temperature=0, max_new_tokens=6, batch_size=2)
    answers, _ = generate(model, smol_tokenizer, CONVERSATIONS, cfg, seed=0, progress=False)
    order = [4, 0, 6, 2, 5, 1, 3]
    again, _ = generate(model, smol_tokenizer, [CONVERSATIONS[i] for i in order], cfg, seed=0, progress=False)
    assert again == [answers[i] for i in order]
    assert gen.length_order(CONVERSATIONS) == [4, 1, 6, 3, 5, 0, 2]  # batched longest first


def _tokens(tok, conversations) -> list[list[int]]:
    return [tok(prompt_text(tok, c, "chat"), add_special_tokens=False)["input_ids"] for c in conversations]


@pytest.mark.parametrize("padded", [False, True], ids=["one-by-one (CPU)", "padded (GPU)"])
def test_rows_that_end_leave_the_batch_and_the_others_answer_as_alone(tiny_policy, adapter, smol_tokenizer, padded):
    from paretohqd.policy.decode import decode

    tok, model = smol_tokenizer, load_for_generation(PolicyConfig(model=tiny_policy), adapter)
    prompts = _tokens(tok, CONVERSATIONS)

    def alone(p: list[int], eos: list[int]) -> list[int]:
        with torch.inference_mode():
            return model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                  max_new_tokens=12, do_sample=False, eos_token_id=eos,
                                  pad_token_id=tok.pad_token_id)[0, len(p):].tolist()

    free = [alone(p, [tok.eos_token_id]) for p in prompts]
    # an end token some rows meet early and others never: rows leave the batch at different steps
    end = next(t for row in free for t in row[1:4] if any(t not in other for other in free))
    with torch.inference_mode():
        got = decode(model, prompts, GenerateConfig(temperature=0, max_new_tokens=12), eos={end, tok.eos_token_id},
                     pad=tok.pad_token_id, padded=padded)
    assert got == [alone(p, [end, tok.eos_token_id]) for p in prompts]
    assert min(map(len, got)) < 12 == max(map(len, got))


def test_rows_on_tokens_returns_leave_the_batch_at_once_and_the_others_answer_alike(tiny_policy, adapter,
                                                                                    smol_tokenizer):
    """What `paretohqd serve` does for a client that leaves: its row ends at the next step."""
    from paretohqd.policy.decode import decode

    tok, model = smol_tokenizer, load_for_generation(PolicyConfig(model=tiny_policy), adapter)
    prompts, cfg, pad = _tokens(tok, CONVERSATIONS[:3]), GenerateConfig(temperature=0, max_new_tokens=10), tok.pad_token_id
    steps = []

    def leave(tokens: list[int]) -> set[int] | None:
        steps.append(tokens)
        return {1} if len(steps) == 3 else None  # row 1's client leaves after its third token

    with torch.inference_mode():
        free = decode(model, prompts, cfg, eos={tok.eos_token_id}, pad=pad)
        got = decode(model, prompts, cfg, eos={tok.eos_token_id}, pad=pad, on_tokens=leave)
    assert len(free[1]) == 10  # it would have gone on
    assert got == [free[0], free[1][:3], free[2]]
    assert [s[1] for s in steps[3:]] == [pad] * (len(steps) - 3) and len(steps) == 10


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_rows_with_different_adapters_answer_as_each_adapter_merged(tiny_policy, adapter, smol_tokenizer, tmp_path,
                                                                    dtype):
    """float32: each row answers exactly as its adapter merged alone. bfloat16: unmerged and merged
    adapters round differently, so each row's tokens are its own adapter's (exact, float32) greedy
    choices within bf16's error instead."""
    from peft import PeftModel

    from paretohqd.policy.generate import load_adapters
    from paretohqd.policy.load import load_policy

    policy, cfg = PolicyConfig(model=tiny_policy), GenerateConfig(temperature=0, max_new_tokens=8, batch_size=4)
    other = _adapter(tiny_policy, tmp_path / "other", seed=2)
    # (names that are no substring of "lora_": PEFT >= 0.22 warns of missing keys for such names)
    both = load_adapters(policy, {"first": adapter, "second": other}, dtype=dtype)
    names = ["first", "second", "__base__", "second", "first", "__base__", "second"]
    rows: dict[int, list[int]] = {}
    got, _ = generate(both, smol_tokenizer, CONVERSATIONS, cfg, seed=0, progress=False, adapters=names,
                      on_tokens=_ids_by_row(rows, smol_tokenizer.pad_token_id))
    for name, folder in (("first", adapter), ("second", other), ("__base__", None)):
        mine = [i for i, n in enumerate(names) if n == name]
        if dtype == "float32":
            alone, _ = generate(load_for_generation(policy, folder, dtype=dtype), smol_tokenizer,
                                [CONVERSATIONS[i] for i in mine], cfg, seed=0, progress=False)
            assert [got[i] for i in mine] == alone
        else:
            exact = load_policy(tiny_policy) if folder is None else PeftModel.from_pretrained(load_policy(tiny_policy),
                                                                                              str(folder))
            assert_greedy_within_bf16(exact.eval(), smol_tokenizer, [CONVERSATIONS[i] for i in mine],
                                      {k: rows[i] for k, i in enumerate(mine)})
    # one adapter for every row (its shared prompt prefix encoded once, with that adapter)
    rows = {}
    all_b, _ = generate(both, smol_tokenizer, CONVERSATIONS, cfg, seed=0, progress=False, adapters=["second"] * 7,
                        on_tokens=_ids_by_row(rows, smol_tokenizer.pad_token_id))
    if dtype == "float32":
        assert all_b == generate(load_for_generation(policy, other, dtype=dtype), smol_tokenizer, CONVERSATIONS, cfg,
                                 seed=0, progress=False)[0]
    else:
        exact = PeftModel.from_pretrained(load_policy(tiny_policy), str(other)).eval()
        assert_greedy_within_bf16(exact, smol_tokenizer, CONVERSATIONS, rows)


def _cfg(policy: str, **generate_kw) -> Config:
    return Config(policy=PolicyConfig(model=policy),
                  generate=GenerateConfig(**{"max_new_tokens": 8, "batch_size": 2, "temperature": 1.0, **generate_kw}))


def test_resumed_sampled_answers_equal_uninterrupted_ones(tiny_policy, adapter, smol_tokenizer, tmp_path, monkeypatch):
    cfg = _cfg(tiny_policy)
    whole = answer(cfg, smol_tokenizer, CONVERSATIONS, adapter, seed=7, label="whole")
    real, calls = gen.generate, []

    def killed_after_two(*a, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(gen, "generate", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        answer(cfg, smol_tokenizer, CONVERSATIONS, adapter, seed=7, label="killed", saved=tmp_path / "b")
    assert len(list((tmp_path / "b").glob("batch-*.parquet"))) == 2
    monkeypatch.setattr(gen, "generate", real)
    assert answer(cfg, smol_tokenizer, CONVERSATIONS, adapter, seed=7, label="resumed", saved=tmp_path / "b") == whole
    assert len(set(whole)) > 1  # sampled, not one answer repeated


def test_a_mix_of_one_model_is_that_model(tiny_policy, adapter, smol_tokenizer):
    cfg = _cfg(tiny_policy)
    assert answer(cfg, smol_tokenizer, CONVERSATIONS[:3], [(adapter, 1.0)], seed=3, label="mix") == \
        answer(cfg, smol_tokenizer, CONVERSATIONS[:3], adapter, seed=3, label="one")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None and torch.cuda.is_available(),
                    reason="vLLM can run here")
def test_vllm_backend_refuses_in_one_line_where_it_cannot_run(tiny_policy, adapter, smol_tokenizer):
    cfg = _cfg(tiny_policy, backend="vllm")
    why = "vllm is not installed" if importlib.util.find_spec("vllm") is None else "needs a CUDA GPU"
    with pytest.raises(ConfigError, match=f"^generate.backend: vllm.*{why}.*set generate.backend: hf$"):
        answer(cfg, smol_tokenizer, CONVERSATIONS, adapter, seed=0, label="vllm")
    full = cfg.model_copy(update={"train": TrainConfig(lora=False)})
    with pytest.raises(ConfigError, match="^generate.backend: vllm serves the trained models as LoRA adapters, "
                                          "but train.lora is false; set generate.backend: hf$"):
        answer(full, smol_tokenizer, CONVERSATIONS, adapter, seed=0, label="vllm")


# GPU: vLLM ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_policy(tmp_path_factory, smol_tokenizer) -> str:
    """A random 2-layer Llama with a head size vLLM's kernels take (64)."""
    return str(tiny_llama(tmp_path_factory.mktemp("vllm-llama"), smol_tokenizer, hidden=256))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_vllm_greedy_answers_match_the_hf_path_for_a_model_and_a_mix(vllm_policy, smol_tokenizer, tmp_path):
    pytest.importorskip("vllm")
    a = _adapter(vllm_policy, tmp_path / "a", seed=1, std=0.05)
    b = _adapter(vllm_policy, tmp_path / "b", seed=2, std=0.05)
    for model in (a, [(a, 0.3), (b, 0.7)]):
        hf, vllm = (answer(_cfg(vllm_policy, temperature=0, dtype="float32", backend=backend), smol_tokenizer,
                           CONVERSATIONS, model, seed=0, label=backend) for backend in ("hf", "vllm"))
        # greedy on different kernels: an exact tie can break either way, so most, not all
        assert sum(x == y for x, y in zip(hf, vllm)) >= len(hf) - 1, (hf, vllm)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_vllm_sampled_answers_are_seeded_per_request(vllm_policy, smol_tokenizer, tmp_path):
    pytest.importorskip("vllm")
    a = _adapter(vllm_policy, tmp_path / "a", seed=1, std=0.05)
    cfg = _cfg(vllm_policy, backend="vllm", dtype="float32")
    whole = answer(cfg, smol_tokenizer, CONVERSATIONS, a, seed=5, label="whole")
    assert answer(cfg, smol_tokenizer, CONVERSATIONS, a, seed=5, label="again") == whole
    assert answer(cfg, smol_tokenizer, CONVERSATIONS, a, seed=6, label="other") != whole
