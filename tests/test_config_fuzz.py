"""Fuzzed configs (hypothesis): YAML files and `--set` values of every key of every section, and
unknown keys, with wrong types, out-of-range and huge numbers, inf/nan, unicode and nesting. Loading
never raises anything but ConfigError, and `paretohqd run --check` never shows a traceback: it
ends with exit 0 (ready) or 2 (one line per problem)."""

import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from paretohqd.cli import app
from paretohqd.config import Config, ConfigError, load_config


def _leaf_keys(model=Config, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            keys += _leaf_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


KEYS = _leaf_keys()
SECTIONS = sorted({k.split(".")[0] for k in KEYS})
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**18, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.text(alphabet=string.printable, max_size=12), st.sampled_from(["auto", "..", "~nobody/x", "/", "a" * 300,
                                                                      "Anthropic/hh-rlhf", "ric-3obj", "é漢字🙂"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(SECTIONS), st.text(max_size=20),
                 st.builds(lambda s, k: f"{s}.{k}", st.sampled_from(SECTIONS), st.text(max_size=10)))


def _tree(pairs: list[tuple[str, object]]) -> dict:
    tree: dict = {}
    for key, value in pairs:
        node = tree
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
        node[last] = value
    return tree


def _loads_or_config_error(*args, **kw) -> None:
    try:
        load_config(*args, **kw)
    except ConfigError as e:
        assert str(e).strip(), "an empty message"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(keys, values), max_size=6))
def test_fuzzed_yaml_configs_load_or_are_one_config_error(tmp_path, pairs):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(_tree(pairs), allow_unicode=True))
    _loads_or_config_error(path)


@settings(max_examples=120, deadline=None)
@given(key=keys, raw=st.one_of(st.text(max_size=40), values.map(lambda v: yaml.safe_dump(v).strip())))
def test_fuzzed_set_values_load_or_are_one_config_error(key, raw):
    _loads_or_config_error(None, [f"{key}={raw}"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_fuzzed_yaml_text_loads_or_is_one_config_error(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _loads_or_config_error(path)


def test_a_config_file_that_is_not_utf8_or_a_folder_is_one_config_error(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(ConfigError, match=r"bin.yaml: cannot read the config file \(.*codec can't decode"):
        load_config(tmp_path / "bin.yaml")
    with pytest.raises(ConfigError, match=r": cannot read the config file \(\[Errno 21\] Is a directory"):
        load_config(tmp_path)


def _exists(value) -> bool:
    texts = [value] if isinstance(value, str) else []
    try:
        return any(Path(t).expanduser().exists() for t in texts)
    except (OSError, ValueError, RuntimeError):
        return False


@pytest.fixture(scope="module")
def check_base(tmp_path_factory, chaos_assets) -> list[str]:
    """An offline config `run --check` passes: the tiny policy and reward models, local data."""
    work = tmp_path_factory.mktemp("fuzzcheck")
    return [f"runs_dir={work / 'runs'}", f"data.sources=[{chaos_assets['data']}]",
            f"policy.model={chaos_assets['policy']}", f"rewards.dir={work / 'rewards'}",
            f"rewards.models={{helpful: {chaos_assets['helpful']}, harmless: {chaos_assets['harmless']}}}"]


def test_the_check_base_is_ready(check_base):
    res = CliRunner().invoke(app, ["run", "configs/demo.yaml", *[x for s in check_base for x in ("--set", s)], "--check"])
    assert res.exit_code == 0 and "ready to run" in res.output, res.output


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), keys), values), min_size=1, max_size=3))
def test_run_check_on_fuzzed_overrides_never_shows_a_traceback(check_base, pairs):
    for _, value in pairs:  # an existing folder as a data source would be searched whole (e.g. /)
        assume(not _exists(value))
    sets = [f"{k}={yaml.safe_dump(v, default_flow_style=True, allow_unicode=True).strip().removesuffix('...').strip()}"
            for k, v in pairs]
    res = CliRunner().invoke(app, ["run", "configs/demo.yaml", *[x for s in check_base + sets for x in ("--set", s)],
                                   "--check"], env={"HF_HUB_OFFLINE": "1"})
    assert res.exit_code in (0, 2), (sets, res.output, res.exception)
    assert res.exception is None or isinstance(res.exception, SystemExit), (sets, repr(res.exception))
    assert "Traceback" not in res.output
