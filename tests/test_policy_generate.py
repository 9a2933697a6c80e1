"""Prompt formats and generation's stopping: the `hh` transcript, stop strings cut from answers,
top_k off by default, and `auto` choosing the format from the tokenizer."""

from types import SimpleNamespace

import pytest
import torch

from paretohqd.config import ConfigError, GenerateConfig
from paretohqd.policy.generate import generate
from paretohqd.policy.prompts import HH_STOP, prompt_text, resolve_format


class ScriptedModel:
    """A stand-in policy that always continues with the same text, and records what it was asked."""

    def __init__(self, tokenizer, continuation: str):
        self.tail = tokenizer(continuation, add_special_tokens=False, return_tensors="pt")["input_ids"]  # (1, T)
        self.generation_config = SimpleNamespace(eos_token_id=None)
        self.device = torch.device("cpu")
        self.calls = []

    def generate(self, input_ids, attention_mask, **kwargs):
        self.calls.append({"input_ids": input_ids, **kwargs})
        return torch.cat([input_ids, self.tail.expand(len(input_ids), -1)], dim=1)


CONVERSATIONS = [[{"role": "user", "content": "Name a fruit."}], [{"role": "user", "content": "Hi"},
                 {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a colour."}]]


def test_hh_format_cuts_the_answer_at_the_next_human_turn(smol_tokenizer):
    model = ScriptedModel(smol_tokenizer, " An apple.\n\nHuman: And another?\n\nAssistant: A pear.")
    answers, _ = generate(model, smol_tokenizer, CONVERSATIONS, GenerateConfig(max_new_tokens=8), seed=0, fmt="hh")
    assert answers == ["An apple.", "An apple."]  # the stop text and all after it are gone
    call = model.calls[0]
    assert call["stop_strings"] == [HH_STOP] and call["top_k"] == 0  # top_k off unless asked, as RiC
    assert smol_tokenizer.eos_token_id in call["eos_token_id"]
    prompts = smol_tokenizer.batch_decode(call["input_ids"], skip_special_tokens=True)
    assert all(p.rstrip().endswith("Assistant:") and "Human: Name a" in p for p in prompts)


def test_chat_format_has_no_hh_stop_but_takes_configured_ones(smol_tokenizer):
    model = ScriptedModel(smol_tokenizer, " Red. END more text")
    cfg = GenerateConfig(max_new_tokens=8, stop=[" END"])
    answers, _ = generate(model, smol_tokenizer, CONVERSATIONS[:1], cfg, seed=0, fmt="chat")
    assert answers == ["Red."] and model.calls[0]["stop_strings"] == [" END"]
    assert "<|im_start|>assistant" in smol_tokenizer.decode(model.calls[0]["input_ids"][0])


def test_auto_format_follows_the_tokenizer(smol_tokenizer, tmp_path):
    assert resolve_format(smol_tokenizer, "auto") == "chat"
    bare = SimpleNamespace(chat_template=None, name_or_path="meta-llama/Llama-2-7b-hf")
    assert resolve_format(bare, "auto") == "hh" and resolve_format(bare, "hh") == "hh"
    with pytest.raises(ConfigError, match="policy.prompt_format: chat, but the tokenizer of 'meta-llama/Llama-2-7b-hf' "
                                          "has no chat template"):
        resolve_format(bare, "chat")
    assert prompt_text(bare, CONVERSATIONS[1], "hh") == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant:"
