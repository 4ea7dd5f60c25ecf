"""Where metrics go: a log line on stdout and, on rank 0, wandb.

wandb is offline unless the job says `logging.wandb: online` (an explicit WANDB_MODE in
the environment wins, as wandb users expect). The run id is derived from the job name, so
a resumed job keeps appending to the same wandb run. The config sent is the redacted one;
no environment variable is ever logged.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from vlv_ray.config import JobConfig


def wandb_run_id(name: str) -> str:
    """A stable, wandb-safe id for a job name."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", name)[:48]
    return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


class MetricsLogger:
    def __init__(self, cfg: JobConfig, rank: int):
        self.cfg, self.run = cfg, None
        mode = os.environ.get("WANDB_MODE") or cfg.logging.wandb
        if rank != 0 or mode == "disabled":
            return
        import wandb

        os.makedirs(cfg.logging.wandb_dir, exist_ok=True)
        self.run = wandb.init(
            project=cfg.logging.wandb_project, id=wandb_run_id(cfg.name), name=cfg.name,
            resume="allow", mode=mode, dir=cfg.logging.wandb_dir,
            config=cfg.to_dict(redact=True), job_type=f"stage{cfg.stage}",
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
        )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log({f"train/{k}": v for k, v in metrics.items() if k != "step"}, step=step)

    def log_eval(self, result: dict[str, Any], step: int) -> list[str]:
        """Eval artefacts: images (uint8 arrays) and tables (lists of dicts), to storage and wandb."""
        import io
        import json

        from PIL import Image

        from vlv_ray import storage

        kw = {"endpoint_url": self.cfg.storage.endpoint_url, "region": self.cfg.storage.region}
        root = storage.join(self.cfg.storage_path, self.cfg.name, "eval")
        written = []
        for name, value in result.items():
            if hasattr(value, "shape"):  # an image
                buf = io.BytesIO()
                Image.fromarray(value).save(buf, "PNG")
                uri = storage.join(root, f"{name}-step-{step:08d}.png")
                storage.write_bytes_atomic(uri, buf.getvalue(), **kw)
                if self.run is not None:
                    import wandb

                    self.run.log({f"eval/{name}": wandb.Image(value)}, step=step)
            else:  # a table: a list of flat dicts
                uri = storage.join(root, f"{name}-step-{step:08d}.jsonl")
                storage.write_bytes_atomic(uri, "".join(json.dumps(r) + "\n" for r in value).encode(), **kw)
                if self.run is not None and value:
                    import wandb

                    cols = list(value[0])
                    self.run.log({f"eval/{name}": wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in value])},
                                 step=step)
            written.append(uri)
        return written

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
