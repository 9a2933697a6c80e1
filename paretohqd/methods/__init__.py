"""What trains the per-preference models: ParetoHqD, its ablations and the paper's baselines, all
run in one harness (same data, reward models, held-out prompts, hypervolume box, compute
accounting). `pipeline.run` prepares and scores the data, calls the method's `train`, then
evaluates the models its `final_models` lists.

`METHODS` is the one place a method's name is looked up. Each method module offers
`contract.MethodModule`'s functions:

- `train(r, tokenizer)`: every training step, each recorded in the run folder's manifest;
- `final_models(r) -> list[FinalModel]`: the models to evaluate, one per preference
  (`contract.per_preference`);
- `describe(cfg) -> str`: one line naming the method and its budget, for reports;
- `work(cfg, n_samples=None) -> dict`: counts of work (`budget.py` turns them into an estimate of
  time); `n_samples`, the scored training set's size once known, for methods whose work grows with it.

and may offer `contract.MayOffer`'s: `check(cfg) -> list[str]`, problems with its settings that
`preflight.preflight` reports before anything runs, and `several_processes(cfg)`. A test checks
every registered module against the contract, and that pyproject's import contract keeps each
method module independent of the others.

An ablation is a method module plus the settings its name implies (`Method.implies`). Adding a
method is one module and one entry here (and its config section, if it has settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from paretohqd.config import Config, ConfigError
from paretohqd.methods import modpo, morlhf, paretohqd, ric, soups
from paretohqd.methods.contract import MethodModule
from paretohqd.runfolder import FinalModel

__all__ = ["METHODS", "REFERENCE", "FinalModel", "Method", "configure", "several_processes", "unread_sections"]


@dataclass(frozen=True)
class Method:
    module: MethodModule
    """The module with train, final_models, describe and work."""
    implies: dict[str, Any] = field(default_factory=dict)
    """Settings the name means, as dotted key -> value; a config that sets a key otherwise is refused."""
    reads: tuple[str, ...] = ()
    """The baselines' config sections (those some method reads: ric, soups, morlhf, ...) this one reads;
    the others do not bind its run folder (`unread_sections`)."""
    shares_stage1_of: str | None = None
    """A method whose stage-1 models (`stage1/`, from the steps `select` and `stage1`) are this one's
    too when its settings that decide them (`compare.STAGE1_KEYS`) agree: `compare` links them in
    when that method ran before, and `budget` does not count them twice."""


METHODS: dict[str, Method] = {
    "paretohqd": Method(paretohqd),
    "stage1-only": Method(paretohqd, {"stage2.enabled": False}, shares_stage1_of="paretohqd"),
    "scalarised": Method(paretohqd, {"select.method": "scalarised"}),
    "full-data": Method(paretohqd, {"select.method": "random"}),
    "full-data-epochs": Method(paretohqd, {"select.method": "random", "select.random_budget": "epochs"}),
    "ric": Method(ric, reads=("ric",)),
    # soups mix LoRA adapters; the RL baselines and MODPO train a LoRA on the run's SFT model (`sft_start`)
    "rewarded-soups": Method(soups, {"train.lora": True}, reads=("soups", "morlhf", "sft_start")),
    "morlhf": Method(morlhf, {"train.lora": True}, reads=("morlhf", "sft_start")),
    "morlhf-gdpo": Method(morlhf, {"train.lora": True, "morlhf.aggregation": "normalize_then_sum"},
                          reads=("morlhf", "sft_start")),
    "modpo": Method(modpo, {"train.lora": True}, reads=("modpo", "sft_start")),  # the reference: the adapter disabled
}
REFERENCE = "paretohqd"
"""The method `compare` states every method's compute relative to."""


def configure(cfg: Config, method: str | None = None) -> Config:
    """`cfg` for `method` (default `cfg.method`): the name checked, the settings it implies filled in,
    so the run's config.yaml shows the effective settings.

    Examples:
        >>> configure(Config(method="stage1-only")).stage2.enabled
        False
        >>> configure(Config(), "scalarised").select.method
        'scalarised'

    Raises:
        ConfigError: an unknown method, or a setting given explicitly that contradicts the method.
    """
    method = cfg.method if method is None else method
    if method not in METHODS:
        raise ConfigError(f"method: {method!r} is not a method; choose one of {', '.join(METHODS)}")
    sections: dict[str, Any] = {}
    for key, value in METHODS[method].implies.items():
        section, name = key.split(".")
        node = sections.get(section, getattr(cfg, section))
        # a key left at its default takes the method's value; one set otherwise by the user is a contradiction
        if name in node.model_fields_set and getattr(node, name) != value:
            raise ConfigError(f"method {method!r} means {key} = {value!r}, but the config sets {key} = "
                              f"{getattr(node, name)!r}; drop that key or choose another method")
        sections[section] = node.model_copy(update={name: value})
    return cfg.model_copy(update={"method": method, **sections})


def unread_sections(cfg: Config) -> tuple[str, ...]:
    """The baselines' sections `cfg.method` does not read: changing them leaves its run folder valid.

    Examples:
        >>> unread_sections(Config(method="ric"))
        ('modpo', 'morlhf', 'sft_start', 'soups')
    """
    read = {s for m in METHODS.values() for s in m.reads}
    return tuple(sorted(read - set(METHODS[cfg.method].reads)))


def several_processes(cfg: Config) -> bool:
    """Whether `cfg.method` trains under a launcher's process group: SFT splits each batch over the
    processes; GRPO (MORLHF, Rewarded Soups' RL variant) runs on the main process alone, where
    its trainer's collectives would wait for processes that never join them. A method module that
    cannot says so with its own `several_processes(cfg)`; the others can.

    Examples:
        >>> several_processes(configure(Config(method="ric"))), several_processes(configure(Config(method="morlhf")))
        (True, False)
    """
    return getattr(module(cfg), "several_processes", lambda cfg: True)(cfg)


def module(cfg: Config) -> MethodModule:
    """The module of `cfg.method` (checked by `configure`)."""
    return METHODS[cfg.method].module
