"""A job: one dataclass per section, YAML in, strict validation.

A job is one YAML file (see `jobs/`). Every key maps onto a dataclass field below, or, for
the larger sections, in this package beside it (`cost:` cost.py, `launch:` launch.py,
`logging:` logging.py); an unknown key, a wrong type or an out-of-range value is a `ConfigError` whose one-line
message names the key, the value and what is allowed. Dotted overrides on the command
line (`optim.lr=1e-4`) are applied before validation, so they get the same checks.

Secrets never live here: storage credentials and `WANDB_API_KEY` come from the
environment only, and `to_dict(redact=True)` masks secret values anyway (URL passwords,
environment secrets pasted into a value).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from vlv_ray.typed import ConfigError, _range, build as _build  # noqa: F401 (ConfigError: this module's API too)

from vlv_ray.config.cost import CostConfig
from vlv_ray.config.launch import LaunchConfig
from vlv_ray.config.logging import LoggingConfig


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: PyYAML (YAML 1.1) would read `1e-4` as a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


@dataclass
class StorageConfig:
    """Where object storage lives. Credentials come from the environment only."""

    endpoint_url: str | None = None  # S3-compatible endpoint (MinIO, R2, moto); else AWS_ENDPOINT_URL
    region: str | None = None  # else AWS_REGION / AWS_DEFAULT_REGION

    @property
    def options(self) -> dict[str, str | None]:
        """The keyword arguments every `vlv_ray.storage` call takes."""
        return {"endpoint_url": self.endpoint_url, "region": self.region}


@dataclass
class DataConfig:
    uri: str = ""  # a dataset written by `vlv-ray data prepare` (folder with manifest.json)
    resolution: int = field(default=384, metadata=_range(8, 4096))
    batch_size: int = field(default=8, metadata=_range(1))  # per worker, per micro-step
    decode_cpus: float = field(default=1.0, metadata=_range(0.0, lo_open=True))
    # Train on the first N images of the manifest only (shards, row groups, rows as stored), read
    # in place: a data-volume sweep's point without a copy. None: every image.
    max_images: int | None = field(default=None, metadata=_range(1))


# The modules a speed key may name (vlv_ray/models/speed.py maps each onto the model).
SpeedModule = Literal["unet", "vae", "text_encoder", "encoder", "llm", "tower"]


@dataclass
class ModelConfig:
    preset: str = "paper"  # a registered preset (vlv_ray/registry.py): tiny, paper, toy (the miniature world)
    florence: str | None = None  # path or hub id of Florence-2 (paper preset)
    stable_diffusion: str | None = None  # path or hub id of SD 2.1-base (paper preset)
    llm: str | None = None  # path or hub id of the stage-2 causal LM (paper preset)
    num_queries: int = field(default=77, metadata=_range(1, 77))
    train_vision_tower: bool = False
    # Stage 2 only:
    stage1: str | None = None  # the stage-1 export (`<run>/export/stage1`, or the run directory)
    train_encoder: bool = True  # train the VLV encoder too (the paper's best: FID 6.64 vs 7.55)
    max_caption_tokens: int = field(default=300, metadata=_range(1))  # captions are cut here, end-of-text kept
    # Speed: how the same maths runs (benchmarks/bench_step.py measures each; vlv_ray/models/speed.py applies them).
    frozen_dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # frozen SD / CLIP text; auto = deepspeed.precision
    attention: Literal["sdpa", "eager"] = "sdpa"  # sdpa dispatches to flash / memory-efficient kernels on GPUs
    # Recompute activations in the backward pass of these modules (memory for time). The public
    # code checkpoints the UNet; at 384 px on an 80 GB GPU nothing needs it.
    gradient_checkpointing: list[Literal["unet", "encoder", "llm"]] = field(default_factory=list)
    channels_last: bool = False  # NHWC convolutions in the UNet and VAE (faster tensor-core convs on GPUs)
    # torch.compile these; "tower" is Florence's frozen DaViT vision tower, "encoder" its language model.
    compile: list[SpeedModule] = field(default_factory=list)
    # Of the compiled modules, these run as CUDA graphs (torch.compile mode "reduce-overhead": the
    # host launches one graph instead of thousands of kernels). Static shapes only; a no-op on CPU.
    # A module not in `compile` is not graphed either: `compile=[]` switches both off.
    cuda_graphs: list[SpeedModule] = field(default_factory=list)
    # How the batch reaches the vision tower at its 768 px: "fp32" upsamples in fp32 and casts
    # (the public code's), "compute" upsamples and normalises in the compute dtype on the device.
    tower_input: Literal["fp32", "compute"] = "fp32"


@dataclass
class OptimConfig:
    lr: float = field(default=5e-5, metadata=_range(0.0, 1.0, lo_open=True))
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    eps: float = field(default=1e-8, metadata=_range(0.0, lo_open=True))
    weight_decay: float = field(default=0.01, metadata=_range(0.0))
    warmup_steps: int = field(default=0, metadata=_range(0))
    min_lr_ratio: float = field(default=0.0, metadata=_range(0.0, 1.0))  # cosine floor = lr × this
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    grad_clip: float = field(default=1.0, metadata=_range(0.0))  # 0 disables clipping
    # torch's fused AdamW (one kernel over DeepSpeed's flat fp32 partition) instead of its
    # per-tensor loop; the same update up to rounding. torch has the fused kernel on CPU too.
    fused: bool = False


# Precision names in job files → torch dtype names (no torch import here: `config check` stays fast).
TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass
class DeepSpeedConfig:
    zero_stage: int = field(default=2, metadata=_range(0, 3))
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_accum_steps: int = field(default=1, metadata=_range(1))
    offload_optimizer: Literal["none", "cpu"] = "none"
    offload_param: Literal["none", "cpu"] = "none"

    @property
    def torch_dtype(self):
        """The compute dtype of frozen modules: `precision` as a torch dtype."""
        import torch

        return getattr(torch, TORCH_DTYPES[self.precision])


@dataclass
class ScalingConfig:
    num_workers: int = field(default=1, metadata=_range(1))
    use_gpu: bool = False
    cpus_per_worker: float = field(default=1.0, metadata=_range(0.0, lo_open=True))
    accelerator_type: str | None = None  # e.g. "A100", "L4" (Ray accelerator type)
    # How long the driver waits for the cluster to place every worker before it gives up
    # with one line (an autoscaling cluster may need minutes to add nodes).
    placement_timeout_s: float = field(default=300.0, metadata=_range(0.0, lo_open=True))


@dataclass
class CheckpointConfig:
    every_steps: int = field(default=1000, metadata=_range(1))
    keep_last: int = field(default=3, metadata=_range(1))
    max_failures: int = field(default=3, metadata=_range(-1))  # Ray Train restarts; -1 = forever
    # A run's lease (<run>/_LEASE.json) is stale, and taken over, after this long without a heartbeat.
    lease_timeout_s: float = field(default=120.0, metadata=_range(3.0))


@dataclass
class CallbackConfig:
    """A user callback run on every worker at the end of every step (`train/callbacks.py`)."""

    path: str = ""  # "package.module:ClassName", importable on the workers
    args: dict[str, Any] = field(default_factory=dict)  # keyword arguments for ClassName(...)


@dataclass
class JobConfig:
    name: str = ""  # run name: re-running the same name resumes
    stage: int = field(default=1, metadata=_range(1, 2))
    storage_path: str = ""  # where runs/checkpoints go: local path, file://, s3://, gs://
    max_steps: int = field(default=1000, metadata=_range(1))
    seed: int = 0
    storage: StorageConfig = field(default_factory=StorageConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    callbacks: list[CallbackConfig] = field(default_factory=list)

    def validate(self) -> "JobConfig":
        """Cross-field checks that no single field can express, then the preset's own."""
        from vlv_ray.registry import ModelBuildError, get_preset

        try:
            preset = get_preset(self.model.preset)
        except ModelBuildError as e:  # model.preset: got …, expected one of the registered names
            raise ConfigError(str(e)) from None
        if not self.name:
            raise ConfigError("name: required (the run name; re-running the same name resumes)")
        if not self.storage_path:
            raise ConfigError("storage_path: required (a local path, file://, s3:// or gs:// URI)")
        if not self.data.uri:
            raise ConfigError("data.uri: required (a dataset written by `vlv-ray data prepare`)")
        if len(self.optim.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.optim.betas):
            raise ConfigError(f"optim.betas: got {self.optim.betas!r}, expected two numbers in [0, 1)")
        if self.optim.warmup_steps >= self.max_steps:
            raise ConfigError(
                f"optim.warmup_steps: got {self.optim.warmup_steps}, expected fewer than max_steps ({self.max_steps})"
            )
        if self.deepspeed.precision == "fp16" and not self.scaling.use_gpu:
            raise ConfigError("deepspeed.precision: fp16 needs scaling.use_gpu=true; use fp32 or bf16 on CPU")
        if self.model.frozen_dtype == "fp16" and not self.scaling.use_gpu:
            raise ConfigError("model.frozen_dtype: fp16 needs scaling.use_gpu=true; use fp32 or bf16 on CPU")
        for key in ("gradient_checkpointing", "compile", "cuda_graphs"):
            names = getattr(self.model, key)
            if len(set(names)) != len(names):
                raise ConfigError(f"model.{key}: got {names!r}, expected each module at most once")
        if self.optim.fused and self.deepspeed.offload_optimizer != "none":
            raise ConfigError("optim.fused: true needs deepspeed.offload_optimizer=none (an offloaded optimizer "
                              "runs DeepSpeed's CPU Adam)")
        if self.stage == 2 and not self.model.stage1:
            raise ConfigError("model.stage1: required for stage 2 (a stage-1 export: <run>/export/stage1)")
        self.logging.validate(self.stage)
        for i, cb in enumerate(self.callbacks):
            if not _CALLBACK_PATH.match(cb.path):
                raise ConfigError(f"callbacks[{i}].path: got {cb.path!r}, expected 'package.module:ClassName'")
        preset.validate(self)  # what this preset needs of a job (e.g. paper: the model paths)
        return self

    @property
    def global_batch_size(self) -> int:
        return self.data.batch_size * self.deepspeed.grad_accum_steps * self.scaling.num_workers

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return _redact(d) if redact else d

    def numerics(self) -> dict[str, Any]:
        """The settings that determine the numerics; stored in checkpoints beside their hash.

        Names, logging, callbacks and max_steps are left out: extending a run (more steps) or
        adding a profiler is a resume, not a different job. So is scaling: a resize resumes
        through a universal checkpoint. Storage is left out too (and with it any credentials in
        an endpoint URL).
        """
        d = self.to_dict(redact=False)
        for k in ("name", "storage_path", "max_steps", "logging", "cost", "checkpoint", "storage", "scaling",
                  "callbacks", "launch"):
            d.pop(k, None)
        for k in SPEED_ONLY_KEYS:  # how the maths runs, not what it is: a resume may change them
            d["model"].pop(k, None)
        for k in OPTIM_SPEED_ONLY_KEYS:
            d["optim"].pop(k, None)
        if d["model"].get("frozen_dtype") == "auto":  # jobs written before the key hash as they did
            d["model"].pop("frozen_dtype")
        if d["data"].get("max_images") is None:  # likewise: every image, as before the key
            d["data"].pop("max_images")
        return d

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.numerics(), sort_keys=True).encode()).hexdigest()[:16]


_CALLBACK_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# Model keys that change speed and memory only (up to floating-point rounding order).
SPEED_ONLY_KEYS = ("attention", "gradient_checkpointing", "channels_last", "compile", "cuda_graphs", "tower_input")
OPTIM_SPEED_ONLY_KEYS = ("fused",)  # the same AdamW update, one kernel instead of a loop


def _redact(d: Any) -> Any:
    """Mask secrets by value, never by key name: no field of a job holds a secret (credentials
    come from the environment), but a value can carry one: a URL with `user:password@`
    (`storage.endpoint_url`, `storage_path`), or a secret from the environment pasted in."""
    if isinstance(d, dict):
        return {k: _redact(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_redact(v) for v in d]
    if isinstance(d, str):
        from vlv_ray.storage import redact

        return redact(d)
    return d


# ---------------------------------------------------------------------------- building


def parse_override(item: str) -> tuple[list[str], Any]:
    """`optim.lr=1e-4` → (['optim', 'lr'], 1e-4). Values are parsed as YAML scalars."""
    if "=" not in item:
        raise ConfigError(f"{item}: overrides look like key.sub=value")
    key, raw = item.split("=", 1)
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"{item}: overrides look like key.sub=value")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for p in path[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{'.'.join(path)}: '{p}' is not a section")
            node = nxt
        node[path[-1]] = value
    return data


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: a directory, expected a job file (YAML)")
    if not p.is_file():
        raise ConfigError(f"{p}: no such job file")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_Loader)
    except UnicodeDecodeError as e:  # an image or other binary file given by mistake
        raise ConfigError(f"{p}: not a text file (byte {e.start} is not UTF-8), expected a job file (YAML)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{p}:{where}: malformed YAML ({problem})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def from_dict(data: dict, overrides: list[str] | None = None, *, source: str = "job") -> JobConfig:
    if isinstance(data, dict) and ({"stage1", "stage2"} <= data.keys() or "kind" in data) and "stage" not in data:
        raise ConfigError(f"{source}: a sweep file (stage1/stage2 keys), not a job: run `vlv-ray sweep {source}`")
    data = apply_overrides(json.loads(json.dumps(data)), overrides or [])
    try:
        return _build(JobConfig, data, "").validate()
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_job(path: str | Path, overrides: list[str] | None = None) -> JobConfig:
    """Load, override and validate a job file. Relative paths in it stay as written."""
    return from_dict(load_yaml(path), overrides, source=str(path))


def dump_yaml(cfg: JobConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(redact=True), sort_keys=False)
