"""Prompt formats and generation's stopping: the `hh` transcript, stop strings that end a row and are
cut from its answer, and `auto` choosing the format from the tokenizer."""

from types import SimpleNamespace

import pytest
import torch
from transformers.cache_utils import DynamicCache

from paretohqd.config import ConfigError, GenerateConfig
from paretohqd.policy.generate import generate
from paretohqd.policy.prompts import HH_STOP, prompt_text, resolve_format


class ScriptedModel:
    """A stand-in policy that always continues with the same text, then EOS: its logits pick the
    text's next token. Its KV cache holds the token ids themselves, so it records each prompt."""

    def __init__(self, tokenizer, continuation: str):
        self.tail = [*tokenizer(continuation, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        self.vocab = len(tokenizer)
        self.generation_config = SimpleNamespace(eos_token_id=None)
        self.device = torch.device("cpu")
        self.prompts, self.steps = [], 0

    def __call__(self, input_ids, cache=None, position_ids=None, **kwargs):
        prefix = cache is None  # the batch's shared prefix is encoded without a cache
        cache = DynamicCache() if cache is None else cache
        ids = input_ids.float()[:, None, :, None]  # (rows, 1 head, tokens, 1)
        keys, _ = cache.update(ids, ids, 0)
        if position_ids is None and not prefix:  # a prompt, after the prefix: its answer starts
            self.prompts.append(keys[0, 0, :, 0].long().tolist())
        elif position_ids is not None:  # one more answer token for every row
            self.steps += 1
        logits = torch.zeros(len(input_ids), 1, self.vocab)
        logits[..., self.tail[min(self.steps, len(self.tail) - 1)]] = 1e4  # sampled or greedy: this token
        return SimpleNamespace(logits=logits, cache=cache)


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
