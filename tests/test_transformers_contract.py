"""What `paretohqd/policy/decode.py` takes from transformers' internals (its KV cache classes and
the causal LM's forward), each checked on its own so that an upgrade that changes one fails here
with a message naming it, rather than as wrong answers in the generation tests. pyproject.toml
caps transformers at the newest minor version these were checked on."""

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
import transformers
from transformers import LlamaForCausalLM
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.modeling_outputs import CausalLMOutputWithPast

from paretohqd.policy.decode import _Buffer

FIX = ("; paretohqd/policy/decode.py relies on it: adapt its decoding loop to this transformers "
       f"({transformers.__version__}), or install the version pyproject.toml allows")


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_cache_takes_a_list_of_layers():
    assert "layers" in _params(Cache.__init__), \
        f"Cache(layers=...) is gone (Cache.__init__{inspect.signature(Cache.__init__)}){FIX}"
    assert callable(getattr(Cache, "batch_select_indices", None)), f"Cache.batch_select_indices is gone{FIX}"


def test_dynamic_layer_is_built_without_arguments_and_overridable():
    try:
        layer = DynamicLayer()
    except TypeError as e:
        pytest.fail(f"DynamicLayer() now needs arguments ({e}){FIX}")
    for name in ("update", "batch_select_indices", "get_seq_length"):
        assert callable(getattr(layer, name, None)), f"DynamicLayer.{name} is gone{FIX}"
    assert {"key_states", "value_states"} <= set(_params(DynamicLayer.update)), \
        f"DynamicLayer.update{inspect.signature(DynamicLayer.update)} no longer takes key_states, value_states{FIX}"


def test_dynamic_cache_from_keys_and_values():
    k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)  # (rows, kv heads, columns, head dim)
    try:
        cache = DynamicCache([(k, v)])
    except TypeError as e:
        pytest.fail(f"DynamicCache([(keys, values), ...]) is refused ({e}){FIX}")
    layer = cache.layers[0]
    assert torch.equal(layer.keys, k) and torch.equal(layer.values, v), \
        f"DynamicCache's layers no longer hold .keys/.values{FIX}"


def test_the_loops_buffer_is_the_cache_a_model_writes():
    """`Cache(layers=[_Buffer...])` as the loop builds it: the model's `cache.update` writes into the
    preallocated buffer in place, its length is what was filled, and rows leave by index."""
    rows, heads, columns, dim = 3, 2, 6, 4
    keys, values = torch.zeros(rows, heads, columns, dim), torch.zeros(rows, heads, columns, dim)
    cache = Cache(layers=[_Buffer(keys, values, 2)])
    assert cache.get_seq_length() == 2, f"Cache.get_seq_length() no longer asks its layers' .keys{FIX}"
    new_k, new_v = torch.ones(rows, heads, 1, dim), torch.full((rows, heads, 1, dim), 2.0)
    out_k, out_v = cache.update(new_k, new_v, 0)
    assert out_k.shape == (rows, heads, 3, dim), f"Cache.update(k, v, layer_idx) no longer returns the layer's update{FIX}"
    assert torch.equal(keys[:, :, 2:3], new_k) and torch.equal(values[:, :, 2:3], new_v), \
        f"Cache.update no longer calls the layer's update (the buffer was not written){FIX}"
    assert cache.get_seq_length() == 3
    cache.batch_select_indices(torch.tensor([0, 2]))
    assert cache.layers[0].keys.shape[0] == 2, f"Cache.batch_select_indices no longer calls its layers'{FIX}"


def test_a_causal_lm_takes_and_returns_the_cache_by_these_names():
    params = _params(LlamaForCausalLM.forward)
    for name in ("cache", "use_cache", "logits_to_keep", "position_ids", "attention_mask"):
        assert name in params, f"LlamaForCausalLM.forward no longer takes `{name}` ({', '.join(params)}){FIX}"
    assert "cache" in CausalLMOutputWithPast.__dataclass_fields__, f"a causal LM's output has no `.cache`{FIX}"


def test_pyproject_caps_transformers_at_a_checked_minor():
    """An upper bound below a minor version these checks have not run on; raising it means running
    this file on the new version first."""
    spec = re.search(r'"transformers(>=[^"]*)"', (Path(__file__).parents[1] / "pyproject.toml").read_text()).group(1)
    cap = re.search(r"<(\d+)\.(\d+)", spec)
    assert cap, f"pyproject.toml: transformers{spec} has no upper bound; cap it below the next minor (e.g. <5.26)"
    installed = tuple(int(x) for x in version("transformers").split(".")[:2])
    assert installed < (int(cap[1]), int(cap[2])), \
        f"transformers {version('transformers')} is installed but pyproject.toml allows transformers{spec}{FIX}"
