"""One owner of a run's paths: `RunPaths`, built once from the absolutized job and handed down.

    <storage_path>/<name>/            run (and checkpoints: step-NNNNNNNN/ sit here, for Ray Train)
      export/stage<N>/                exports
      logs/                           failure reports (train/failure.py)
      cost/ledger.json                cost (vlv_ray/cost)
      eval/                           periodic reconstructions / captions
      eval.jsonl                      reconstruction FID by images seen (eval/during.py)
      rejects/                        rows the decode tasks dropped
      history.jsonl                   resumes with changed settings
      _LEASE.json                     the driver's lease (train/lease.py)

`storage` is the keyword arguments every `vlv_ray.storage` call takes (endpoint, region).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from vlv_ray import storage as _storage

PACKAGED_JOBS = Path(__file__).resolve().parent / "jobs"  # vlv_ray/jobs, package data: any install, any directory


def absolutize(uri: str) -> str:
    """Local relative paths become absolute: Ray workers do not share the driver's cwd."""
    if "://" in uri:
        return uri
    return str(Path(uri).expanduser().resolve())


def absolutized(cfg):
    """A copy of a `JobConfig` whose local paths are absolute (what the workers are handed)."""
    model = dataclasses.replace(cfg.model, stage1=absolutize(cfg.model.stage1) if cfg.model.stage1 else None)
    return dataclasses.replace(
        cfg, storage_path=absolutize(cfg.storage_path), model=model,
        data=dataclasses.replace(cfg.data, uri=absolutize(cfg.data.uri)),
        logging=dataclasses.replace(cfg.logging, wandb_dir=absolutize(cfg.logging.wandb_dir),
                                    eval_data=absolutize(cfg.logging.eval_data) if cfg.logging.eval_data else None))


def for_job(cfg):
    """(the absolutized job, its `RunPaths`): built once, where a job is loaded to run, and handed down."""
    cfg = absolutized(cfg)
    return cfg, RunPaths.of(cfg)


class _Under:
    """A path below the run directory, read as an attribute: `RunPaths.logs` → <run>/logs."""

    def __init__(self, *parts: str):
        self.parts = parts

    def __get__(self, paths: "RunPaths | None", owner: type | None = None):
        return self if paths is None else _storage.join(paths.run, *self.parts)


@dataclass(frozen=True)
class RunPaths:
    run: str  # <storage_path>/<name>
    storage: dict[str, str | None] = field(default_factory=dict)  # endpoint_url, region

    # The layout (the module's docstring), one line a path.
    exports = _Under("export")
    logs = _Under("logs")
    cost = _Under("cost")
    eval = _Under("eval")
    eval_log = _Under("eval.jsonl")  # FID by images seen (vlv_ray/eval/during.py)
    rejects = _Under("rejects")
    history = _Under("history.jsonl")
    lease = _Under("_LEASE.json")

    @classmethod
    def of(cls, cfg) -> "RunPaths":
        """From a job whose paths are already absolute (`absolutized`)."""
        return cls(_storage.join(cfg.storage_path, cfg.name), cfg.storage.options)

    @property
    def checkpoints(self) -> str:
        return self.run  # Ray Train's RunConfig(storage_path, name) puts them in the run directory

    def export(self, stage: int) -> str:
        return _storage.join(self.run, "export", f"stage{stage}")

    def to_dict(self) -> dict:
        return {"run": self.run, "storage": dict(self.storage)}
