"""`paretohqd run --check` and the start of every run: everything that would otherwise fail hours into
a run, checked in seconds and reported at once, one line a problem (`preflight`), one small check
function per concern: settings, run folder, reward models, data, policy, the hub, the tokenizer."""

from __future__ import annotations

from pathlib import Path

from paretohqd import methods
from paretohqd.config import Config, ConfigError
from paretohqd.executor import executor_problems
from paretohqd.io import InputError
from paretohqd.policy.load import has_weights, load_tokenizer, resolve_policy
from paretohqd.policy.sft import check_report_to
from paretohqd.policy.vllm import check_backend


def preflight(cfg: Config, *, config_args: str = "--config CONFIG") -> tuple[Config, object]:
    """Check, before anything expensive, what would otherwise fail hours into a run: the method and
    its settings, the preferences, the batch split, the policy's tokenizer and prompt format (one
    training sample encoded), every reward model (a column objective's trained scorer too: the
    problem names the command that trains it, completed with `config_args`), data source and the
    run folder's config. Hub ids are asked for concurrently (each unreachable one takes
    huggingface_hub ~30 s of retries).

    Returns:
        The configured config (`methods.configure`) and the policy's tokenizer.

    Raises:
        ConfigError: every problem found, one line each, named by its config key.
    """
    cfg = methods.configure(cfg)
    hub: dict[str, tuple[str, str]] = {}  # config key -> (repo id, repo type): asked together, below
    problems = (_settings_problems(cfg) + _run_folder_problems(cfg) + _reward_problems(cfg, config_args, hub)
                + _data_problems(cfg, hub) + _policy_problems(cfg, hub))
    problems += _hub_problems(hub)
    tokenizer = None
    if not any(p.startswith("policy.model:") for p in problems):
        tokenizer, found = _tokenizer_problems(cfg)
        problems += found
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) found before the run:\n  - " + "\n  - ".join(problems))
    return cfg, tokenizer


def _settings_problems(cfg: Config) -> list[str]:
    """The tracker, the generation backend, the preferences, the method's own settings and the
    processes the run is launched on."""
    from accelerate import PartialState

    from paretohqd.pareto.preferences import preferences_from_config

    problems: list[str] = []
    try:
        check_report_to(cfg.train)
    except ConfigError as e:
        problems.append(str(e))
    problems += check_backend(cfg.generate, lora=cfg.train.lora)  # vllm missing: refused now, not after stage 1
    for key, value in (("select.preferences", cfg.select.preferences), ("morlhf.preferences", cfg.morlhf.preferences),
                       ("modpo.preferences", cfg.modpo.preferences)):
        if value is None:
            continue
        try:
            preferences_from_config(value, len(cfg.rewards.models))
        except ValueError as e:
            problems.append(f"{key}: {e}")
    problems += getattr(methods.module(cfg), "check", lambda cfg: [])(cfg)  # a method's own settings (MODPO's)
    n_processes = PartialState().num_processes
    if cfg.train.batch_size % n_processes:
        problems.append(f"train.batch_size: {cfg.train.batch_size} does not split over the {n_processes} processes; "
                        f"use a multiple of {n_processes}")
    problems += executor_problems(cfg.executor, n_processes)
    if n_processes > 1 and not methods.several_processes(cfg):
        problems.append(f"method: {cfg.method!r} trains with GRPO, which runs on one process here; "
                        "launch it without torchrun / accelerate launch")
    return problems


def _run_folder_problems(cfg: Config) -> list[str]:
    """A run folder of that name made with another config."""
    from paretohqd.runfolder import config_differences

    try:
        differs = config_differences(cfg, Path(cfg.runs_dir) / cfg.name, free=methods.unread_sections(cfg))
    except ConfigError as e:
        return [f"name: {e}"]
    if differs:
        return [f"name: {Path(cfg.runs_dir) / cfg.name} was made with another config (differs in: "
                f"{', '.join(differs)}); resume with the same config, or start a new run with --set name=NEW"]
    return []


def _reward_problems(cfg: Config, config_args: str, hub: dict[str, tuple[str, str]]) -> list[str]:
    """Reward models that cannot be found, and column objectives' untrained scorers; hub ids go to `hub`."""
    from paretohqd.rewards import locate
    from paretohqd.rewards.labels import missing_scorers

    problems: list[str] = []
    for objective, name in cfg.rewards.models.items():
        try:
            kind, source = locate(name, cfg.rewards)
        except (ConfigError, OSError, ValueError) as e:  # (OSError: a name no file system takes)
            problems.append(f"rewards.models.{objective}: {e}")
            continue
        if kind == "hub":
            hub[f"rewards.models.{objective}"] = (source, "model")
    return problems + missing_scorers(cfg.rewards, cfg.data, config_args)


def _data_problems(cfg: Config, hub: dict[str, tuple[str, str]]) -> list[str]:
    """Data sources (and evaluation sources) that are neither a file nor a hub id; hub ids go to `hub`."""
    from paretohqd.data.hh_rlhf import HUB_ID
    from paretohqd.data.sources import as_source, on_hub

    problems: list[str] = []
    data_sources = [("data.sources", s) for s in cfg.data.sources]
    if cfg.evaluate.source == "split":
        data_sources += [("evaluate.sources", s) for s in cfg.evaluate.sources]
    for key, source in data_sources:
        src = as_source(source)
        if on_hub(src):
            hub[f"{key} {src.path}"] = (src.path, "dataset")
        elif not _exists(src.path):
            hub_hint = f"the hub id {HUB_ID!r}" if src.format == "hh" else "a hub dataset id owner/name"
            problems.append(f"{key}: {src.path}: no such file or folder (and not {hub_hint})")
    return problems


def _policy_problems(cfg: Config, hub: dict[str, tuple[str, str]]) -> list[str]:
    """A policy folder without weights; a hub id goes to `hub`."""
    if resolve_policy(cfg.policy.model) == cfg.policy.model and not _exists(cfg.policy.model):
        hub["policy.model"] = (cfg.policy.model, "model")  # a hub id: asked first, with the others
    elif _exists(cfg.policy.model) and not has_weights(Path(cfg.policy.model).expanduser()):
        return [f"policy.model: {cfg.policy.model} holds no model weights (*.safetensors or *.bin); "
                "give the folder a saved model (save_pretrained) or a hub id"]
    return []


def _hub_problems(hub: dict[str, tuple[str, str]]) -> list[str]:
    """The hub's answer for each of `hub`'s ids, asked concurrently: one problem per id it cannot give."""
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # one line per problem below, not huggingface_hub's retry chatter
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=len(hub) or 1) as pool:
        answers = {key: pool.submit(_ask_hub, *repo) for key, repo in hub.items()}
        for key, job in answers.items():
            if job.result() is not None:
                repo, repo_type = hub[key]
                problems.append(f"{key.split()[0]}: cannot reach the {repo_type} {repo!r} on the Hugging Face hub "
                                f"({job.result()}); use a local folder, or HF_HUB_OFFLINE=1 once it is in the "
                                "cache, or `hf auth login` if it is gated")
    return problems


def _ask_hub(repo: str, repo_type: str) -> str | None:
    """None if the hub (or, offline, the local cache) has `repo`, else why not, in one line."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache

    try:
        if constants.HF_HUB_OFFLINE:  # offline by choice: what counts is the local cache
            if repo_type == "dataset" or isinstance(try_to_load_from_cache(repo, "config.json"), str):
                return None  # (`datasets` checks its own cache when it loads)
            return "HF_HUB_OFFLINE is set and it is not in the local cache"
        HfApi().repo_info(repo, repo_type=repo_type)
        return None
    except Exception as e:  # offline, gated, a typo, an id the hub cannot take: all end the same way
        return str(e).strip().splitlines()[0][:160] or type(e).__name__


def _tokenizer_problems(cfg: Config) -> tuple[object, list[str]]:
    """The policy's tokenizer (None if it cannot load) and the problems of encoding one real training
    sample with it, exactly as training will."""
    from paretohqd.data.sources import as_source, first_sample, on_hub
    from paretohqd.data.transcript import to_messages
    from paretohqd.policy.batches import encode
    from paretohqd.policy.prompts import resolve_format

    try:
        tokenizer = load_tokenizer(cfg.policy.model, trust_remote_code=cfg.policy.trust_remote_code)
    except (OSError, ValueError) as e:  # (load_tokenizer names the model)
        return None, [f"policy.model: {str(e).strip().splitlines()[0][:240]}"]
    try:
        fmt = resolve_format(tokenizer, cfg.policy.prompt_format)
        local = [s for s in cfg.data.sources if not on_hub(s) and Path(as_source(s).path).expanduser().exists()]
        if local:  # one real training sample, encoded exactly as training will
            sample = first_sample(local[0], cfg.data.hub_split)
            encode(tokenizer, sample.messages or to_messages(sample.prompt), sample.response, cfg.train.max_length, fmt)
    except ConfigError as e:
        return tokenizer, [str(e)]
    except InputError as e:
        return tokenizer, [f"data.sources: {e}"]
    except Exception as e:  # a template or tokenizer that cannot encode our samples
        return tokenizer, [f"policy.prompt_format: cannot encode a training sample with {cfg.policy.model!r} in "
                           f"format {cfg.policy.prompt_format}: {str(e).splitlines()[0][:160]}"]
    return tokenizer, []


def _exists(path: str) -> bool:
    """Whether a config's path names something, False for names no file system takes (too long,
    `~nobody/x`): those are reported as missing, not as a traceback."""
    try:
        return Path(path).expanduser().exists()
    except (OSError, ValueError, RuntimeError):
        return False
