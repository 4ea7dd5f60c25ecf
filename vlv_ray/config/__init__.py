"""The job schema: `job.py` (a job and its core sections, loading, overrides), `cost.py`,
`launch.py` and `logging.py` (the larger sections), `sweep.py` (sweep files). Everything is
importable from here; the package imports nothing of the project but `vlv_ray.typed`,
`vlv_ray.registry` (and storage's redaction), so every component stands above it."""
from vlv_ray.config.cost import CostConfig
from vlv_ray.config.job import (
    OPTIM_SPEED_ONLY_KEYS, SPEED_ONLY_KEYS, TORCH_DTYPES, CallbackConfig, CheckpointConfig, DataConfig,
    DeepSpeedConfig, JobConfig, ModelConfig, OptimConfig, ScalingConfig, StorageConfig, apply_overrides,
    dump_yaml, from_dict, load_job, load_yaml, parse_override,
)
from vlv_ray.config.launch import LaunchConfig
from vlv_ray.config.logging import LoggingConfig
from vlv_ray.config.sweep import (
    SWEEP_KINDS, JobsSweepConfig, JobsSweepStageConfig, SweepConfig, SweepEvalConfig, SweepStageConfig,
    SweepTrialConfig, load_sweep,
)
from vlv_ray.typed import ConfigError

__all__ = [
    "CallbackConfig", "CheckpointConfig", "ConfigError", "CostConfig", "DataConfig", "DeepSpeedConfig",
    "JobConfig", "JobsSweepConfig", "JobsSweepStageConfig", "LaunchConfig", "LoggingConfig", "ModelConfig",
    "OPTIM_SPEED_ONLY_KEYS", "OptimConfig", "SPEED_ONLY_KEYS", "SWEEP_KINDS", "ScalingConfig", "StorageConfig",
    "SweepConfig", "SweepEvalConfig", "SweepStageConfig", "SweepTrialConfig", "TORCH_DTYPES", "apply_overrides",
    "dump_yaml", "from_dict", "load_job", "load_sweep", "load_yaml", "parse_override",
]
