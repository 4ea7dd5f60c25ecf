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


@dataclass(frozen=True)
class RunPaths:
    run: str  # <storage_path>/<name>
    storage: dict[str, str | None] = field(default_factory=dict)  # endpoint_url, region

    @classmethod
    def of(cls, cfg) -> "RunPaths":
        """From a job whose paths are already absolute (`absolutized`)."""
        return cls(_storage.join(cfg.storage_path, cfg.name), cfg.storage.options)

    def _at(self, *parts: str) -> str:
        return _storage.join(self.run, *parts)

    @property
    def checkpoints(self) -> str:
        return self.run  # Ray Train's RunConfig(storage_path, name) puts them in the run directory

    @property
    def exports(self) -> str:
        return self._at("export")

    def export(self, stage: int) -> str:
        return self._at("export", f"stage{stage}")

    @property
    def logs(self) -> str:
        return self._at("logs")

    @property
    def cost(self) -> str:
        return self._at("cost")

    @property
    def eval(self) -> str:
        return self._at("eval")

    @property
    def eval_log(self) -> str:
        return self._at("eval.jsonl")  # FID by images seen (vlv_ray/eval/during.py)

    @property
    def rejects(self) -> str:
        return self._at("rejects")

    @property
    def history(self) -> str:
        return self._at("history.jsonl")

    @property
    def lease(self) -> str:
        return self._at("_LEASE.json")

    def to_dict(self) -> dict:
        return {"run": self.run, "storage": dict(self.storage)}
