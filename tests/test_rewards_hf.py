"""Hugging Face reward models on tiny random classifiers saved to a temp folder (no hub), presets,
loader errors, and the `score` / `reward train` commands."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from paretohqd.cli import app
from paretohqd.config import ConfigError, RewardsConfig
from paretohqd.rewards import PRESETS, Preset, load_reward_model, load_reward_models
from paretohqd.rewards.hf import HFRewardModel

F32 = RewardsConfig(dtype="float32")  # compared with a plain float32 forward below
PROMPTS = ["\n\nHuman: How do I bake bread?", "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke."]
RESPONSES = ["Mix flour, water, yeast and salt, then knead it and let it rise for an hour.", "No."]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 1-layer random BERT classifier (2 logits) with MiniLM's WordPiece tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from paretohqd.rewards.minilm import encoder_path

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(encoder_path())
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, num_labels=2, max_position_embeddings=512)
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory, smol_tokenizer):
    """A random decoder classifier, as the Ray2333 GPT-2 reward models are (1 logit, last token)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(smol_tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=1024, num_labels=1)
    GPT2ForSequenceClassification(cfg).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder


def _manual(folder, first, second, logit):
    """What the model says for one input, with no batching, padding or sorting."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        return model(**tok(first, second, return_tensors="pt")).logits[0, logit].item()


@pytest.mark.parametrize("fmt,logit", [("pair", 0), ("response", 1)])
def test_formats_match_a_manual_forward(tiny_bert, fmt, logit):
    m = HFRewardModel(str(tiny_bert), F32, format=fmt, logit=logit, name="tiny")
    got = m.score(PROMPTS, RESPONSES, batch_size=2)  # padded, sorted batch
    for p, r, g in zip(PROMPTS, RESPONSES, got):
        first, second = (p + "\n\nAssistant:", r) if fmt == "pair" else (r, None)
        assert g == pytest.approx(_manual(tiny_bert, first, second, logit), abs=1e-5)


def test_response_format_ignores_the_prompt_and_pair_reads_it(tiny_bert):
    cfg = F32
    resp = HFRewardModel(str(tiny_bert), cfg, format="response", logit=1, name="t")
    pair = HFRewardModel(str(tiny_bert), cfg, format="pair", logit=1, name="t")
    other = ["\n\nHuman: Something else entirely?"] * 2
    assert np.array_equal(resp.score(PROMPTS, RESPONSES), resp.score(other, RESPONSES))
    assert not np.allclose(pair.score(PROMPTS, RESPONSES), pair.score(other, RESPONSES))
    assert resp.fingerprint != pair.fingerprint


def test_decoder_classifier_pads_and_batches(tiny_gpt2):
    m = HFRewardModel(str(tiny_gpt2), F32, format="pair", logit=0, name="gpt2")
    one = np.array([m.score([p], [r])[0] for p, r in zip(PROMPTS, RESPONSES)])
    assert np.allclose(m.score(PROMPTS, RESPONSES, batch_size=2), one, atol=1e-5)
    assert one[0] == pytest.approx(_manual(tiny_gpt2, PROMPTS[0] + "\n\nAssistant:", RESPONSES[0], 0), abs=1e-5)


def test_long_inputs_keep_their_end(tiny_bert):
    m = HFRewardModel(str(tiny_bert), RewardsConfig(max_length=16), format="response", logit=0, name="t")
    ids = m.encode(["x"], ["word " * 100 + "finale"])["input_ids"][0]
    assert len(ids) == 16 and "finale" in m.tokenizer.decode(ids)


def test_truncation_side_right_keeps_the_start_as_ric_and_keys_the_cache(tiny_bert):
    """`rewards.truncation_side: right` (RiC's tokenizer default) keeps an input's start instead; the
    side is part of the score cache's key, except `left`, the side before the key existed."""
    left = HFRewardModel(str(tiny_bert), RewardsConfig(max_length=16), format="response", logit=0, name="t")
    right = HFRewardModel(str(tiny_bert), RewardsConfig(max_length=16, truncation_side="right"), format="response",
                          logit=0, name="t")
    ids = right.encode(["x"], ["opening " + "word " * 100 + "finale"])["input_ids"][0]
    text = right.tokenizer.decode(ids)
    assert len(ids) == 16 and "opening" in text and "finale" not in text
    assert left.fingerprint != right.fingerprint
    with pytest.raises(ValueError, match="truncation_side"):
        RewardsConfig(truncation_side="middle")


def test_presets_through_the_loader(tiny_bert, monkeypatch):
    """Each preset's format and logit, loaded by name (its hub id pointed at the tiny folder)."""
    for name, p in list(PRESETS.items()):
        monkeypatch.setitem(PRESETS, name, Preset(str(tiny_bert), p.format, p.logit))
    models = load_reward_models(RewardsConfig(models={"harmless": "ray2333-harmless", "humor": "humor-no-humor"}, dtype="float32"))
    assert (models["harmless"].format, models["harmless"].logit) == ("pair", 0)
    assert (models["humor"].format, models["humor"].logit) == ("response", 1)
    assert models["humor"].score(PROMPTS, RESPONSES)[0] == pytest.approx(_manual(tiny_bert, RESPONSES[0], None, 1), abs=1e-5)


def test_preset_table_matches_the_paper():
    assert PRESETS["ray2333-harmless"] == Preset("Ray2333/gpt2-large-harmless-reward_model", "pair", 0)
    assert PRESETS["ray2333-helpful"] == Preset("Ray2333/gpt2-large-helpful-reward_model", "pair", 0)
    assert PRESETS["humor-no-humor"] == Preset("mohameddhiab/humor-no-humor", "response", 1)


def test_local_folder_uses_configured_format(tiny_bert):
    m = load_reward_model(str(tiny_bert), RewardsConfig(format="response", logit=1))
    assert (m.format, m.logit) == ("response", 1)


def test_loader_errors(tmp_path, tiny_bert):
    cfg = RewardsConfig(dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"unknown reward model 'helpfull'.*presets \['humor-no-humor', 'ray2333-harmless'"):
        load_reward_model("helpfull", cfg)
    with pytest.raises(ConfigError, match=r"unknown reward model './nope'.*minilm-helpful"):
        load_reward_model("./nope", cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        load_reward_model(str(tmp_path / "empty"), cfg)
    with pytest.raises(ConfigError, match=r"'minilm-humor' is not trained yet.*reward train --only humor"):
        load_reward_model("minilm-humor", cfg)
    with pytest.raises(ConfigError, match=r"cannot load reward model 'nobody/no-such-model'"):
        load_reward_model("nobody/no-such-model", cfg)
    with pytest.raises(ConfigError, match=r"has 2 logit\(s\); logit index 5 is out of range"):
        load_reward_model(str(tiny_bert), RewardsConfig(logit=5))
    with pytest.raises(ConfigError, match="rewards.models is empty"):
        load_reward_models(RewardsConfig(models={}))


def test_trust_remote_code_off_by_default():
    assert RewardsConfig().trust_remote_code is False


def test_dtype_auto_and_explicit(tiny_bert):
    from paretohqd.rewards import resolve_dtype

    assert resolve_dtype("float16", "cpu") == torch.float16
    from paretohqd.devices import native_bf16

    assert resolve_dtype("auto", "cpu") == (torch.bfloat16 if native_bf16("cpu") else torch.float32)
    a = HFRewardModel(str(tiny_bert), RewardsConfig(dtype="bfloat16"), format="pair", logit=0, name="t")
    assert a.model.dtype == torch.bfloat16 and a.fingerprint != HFRewardModel(str(tiny_bert), F32, format="pair", logit=0, name="t").fingerprint


def test_cli_score_writes_table_and_stats_and_reruns_from_cache(tmp_path, tiny_bert):
    data = tmp_path / "hh.parquet"
    pd.DataFrame({"id": ["a", "b"], "prompt": PROMPTS, "response": RESPONSES}).to_parquet(data)
    out = tmp_path / "scores.parquet"
    args = ["score", str(data), "--reward-models", f"tiny={tiny_bert}", "--out", str(out),
            "--set", f"rewards.dir={tmp_path / 'rewards'}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    scored = pd.read_parquet(out)
    stats = json.loads((tmp_path / "scores.stats.json").read_text())
    assert stats["stats"]["tiny"]["max"] == scored["tiny"].max() and stats["rows"] == 2
    chunks = list((tmp_path / "rewards" / "scores").rglob("chunk-*.parquet"))
    assert len(chunks) == 1
    assert CliRunner().invoke(app, args).exit_code == 0
    assert list((tmp_path / "rewards" / "scores").rglob("chunk-*.parquet")) == chunks  # nothing rescored


def test_cli_errors_are_clean(tmp_path):
    res = CliRunner().invoke(app, ["score", str(tmp_path / "x.parquet"), "--reward-models", "helpful"])
    assert res.exit_code == 2 and "expected objective=model" in res.output
    res = CliRunner().invoke(app, ["reward", "train", "--only", "funny", "--set", f"rewards.dir={tmp_path}"])
    assert res.exit_code == 2 and "cannot train ['minilm-funny']" in res.output
