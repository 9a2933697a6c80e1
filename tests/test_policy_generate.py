"""Prompt formats and generation's stopping: the `hh` transcript, stop strings that end a row and are
cut from its answer, and `auto` choosing the format from the tokenizer."""

from types import SimpleNamespace

import pytest
from scripted import ScriptedModel

from paretohqd.config import ConfigError, GenerateConfig
from paretohqd.policy.generate import generate
from paretohqd.policy.prompts import HH_STOP, prompt_text, resolve_format


CONVERSATIONS = [[{"role": "user", "content": "Name a fruit."}], [{"role": "user", "content": "Hi"},
                 {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a colour."}]]


def test_hh_format_cuts_the_answer_at_the_next_human_turn(smol_tokenizer):
    model = ScriptedModel(smol_tokenizer, " An apple.\n\nHuman: And another?\n\nAssistant: A pear.")
    answers, _ = generate(model, smol_tokenizer, CONVERSATIONS, GenerateConfig(max_new_tokens=8), seed=0, fmt="hh")
    assert answers == ["An apple.", "An apple."]  # the stop text and all after it are gone
    stop = len(smol_tokenizer(" An apple." + HH_STOP, add_special_tokens=False)["input_ids"])
    assert model.steps == stop - 1  # the rows ended at the stop string, not at max_new_tokens
    prompts = smol_tokenizer.batch_decode(model.prompts, skip_special_tokens=True)
    assert all(p.rstrip().endswith("Assistant:") and "Human: Name a" in p for p in prompts)


def test_chat_format_has_no_hh_stop_but_takes_configured_ones(smol_tokenizer):
    model = ScriptedModel(smol_tokenizer, " Red. END more text")
    cfg = GenerateConfig(max_new_tokens=8, stop=[" END"])
    answers, _ = generate(model, smol_tokenizer, CONVERSATIONS[:1], cfg, seed=0, fmt="chat")
    assert answers == ["Red."] and model.steps == len(smol_tokenizer(" Red. END")["input_ids"]) - 1
    assert smol_tokenizer.decode(model.prompts[0]).endswith("<|im_start|>assistant\n")


def test_auto_format_follows_the_tokenizer(smol_tokenizer, tmp_path):
    assert resolve_format(smol_tokenizer, "auto") == "chat"
    bare = SimpleNamespace(chat_template=None, name_or_path="meta-llama/Llama-2-7b-hf")
    assert resolve_format(bare, "auto") == "hh" and resolve_format(bare, "hh") == "hh"
    with pytest.raises(ConfigError, match="policy.prompt_format: chat, but the tokenizer of 'meta-llama/Llama-2-7b-hf' "
                                          "has no chat template"):
        resolve_format(bare, "chat")
    assert prompt_text(bare, CONVERSATIONS[1], "hh") == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant:"
