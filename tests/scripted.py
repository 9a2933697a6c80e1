"""A scripted stand-in policy for the tests of generation's stopping (tests/test_policy_generate.py,
tests/test_llama2_tokenizer.py)."""

from types import SimpleNamespace

import torch
from transformers.cache_utils import DynamicCache


class ScriptedModel:
    """A stand-in policy that always continues with the same text (or token ids), then EOS: its
    logits pick the text's next token. Its KV cache holds the token ids themselves, so it records each prompt."""

    def __init__(self, tokenizer, continuation: str | list[int]):
        if isinstance(continuation, str):
            continuation = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        self.tail = [*continuation, tokenizer.eos_token_id]
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
