"""Where metrics go, and when: a log line on stdout and, on rank 0, wandb.

wandb is offline unless the job says `logging.wandb: online` (an explicit WANDB_MODE in
the environment wins, as wandb users expect). The run id is derived from the job name, so
a resumed job keeps appending to the same wandb run. The config sent is the redacted one;
no environment variable is ever logged.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from typing import Any

from vlv_ray.config import JobConfig
from vlv_ray.paths import RunPaths


def wandb_run_id(name: str) -> str:
    """A stable, wandb-safe id for a job name."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", name)[:48]
    return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


class MetricsLogger:
    """Logs a step's metrics when due (every `logging.every_steps`, the first step of a run and
    the last), and runs the stage's evaluation every `logging.eval_every_steps`."""

    def __init__(self, cfg: JobConfig, paths: RunPaths, rank: int, *, first_step: int = 0):
        self.cfg, self.paths, self.rank, self.run = cfg, paths, rank, None
        self.first_step = first_step  # the step this run (re)started from
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

    def log_step(self, metrics: dict[str, Any]) -> None:
        step = metrics["step"]
        due = step % self.cfg.logging.every_steps == 0 or step in (self.cfg.max_steps, self.first_step + 1)
        if self.rank != 0 or not due:
            return
        print(format_log_line(metrics, self.cfg.max_steps), flush=True)
        if self.run is not None:
            self.run.log({f"train/{k}": v for k, v in metrics.items() if k != "step"}, step=step)

    def evaluate_if_due(self, stage, engine, batch: dict[str, Any], step: int) -> None:
        """Collective when due: every rank evaluates (ZeRO-3 gathers weights); rank 0 logs."""
        every = self.cfg.logging.eval_every_steps
        if not every or step % every:
            return
        result = stage.evaluate(engine, batch)
        if self.rank == 0 and result:
            print(f"[vlv-ray] eval at step {step}: {', '.join(self.log_eval(result, step))}", flush=True)

    def log_eval(self, result: dict[str, Any], step: int) -> list[str]:
        """Eval artefacts: images (uint8 arrays) and tables (lists of dicts), to storage and wandb."""
        import io
        import json

        from PIL import Image

        from vlv_ray import storage

        kw, root = self.paths.storage, self.paths.eval
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


def format_log_line(m: dict[str, Any], max_steps: int) -> str:
    tokens = f"{m['tokens_per_s']:.0f} tok/s | " if m.get("tokens_per_s") else ""  # stage 2
    return (f"{time.strftime('%H:%M:%S')} step {m['step']}/{max_steps} | loss {m['loss']:.4f} | lr {m['lr']:.2e} | "
            f"gnorm {m['grad_norm']:.3f} | {m['samples_per_s']:.1f} samples/s | {tokens}"
            f"step {m['step_time_s']:.2f}s | data {m['data_wait_s']:.2f}s | "
            f"rejected {m['rejected_rows']} | ${m['cost_usd']:.4f}"
            + (f" | mem {m['peak_mem_gb']:.1f} GB" if m.get("peak_mem_gb") else "")
            + (f" | wall {m['wall_s']:.2f}s" if "wall_s" in m else ""))
