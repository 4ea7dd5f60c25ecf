"""The gap between bench_step's bare step and the end-to-end `vlv-ray train` figure, per
stage, from the newest rows of each in a results file (benchmarks/gpu_run.sh prints it).

    python benchmarks/gpu_gap.py benchmarks/results.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def gap(rows: list[dict], preset: str = "paper") -> list[dict]:
    out = []
    for stage in (1, 2):
        train = [r for r in rows if r.get("bench") == "train" and r.get("stage") == stage and r.get("preset") == preset
                 and r.get("config") == "ours"]
        if not train:
            continue
        t = train[-1]
        step = [r for r in rows if r.get("bench") == "step" and r.get("stage") == stage and r.get("preset") == preset
                and r.get("config") == "ours" and r.get("batch_size") == t["batch_size"]
                and "samples_per_s_per_gpu" in r]
        s = step[-1] if step else None
        out.append({"stage": stage, "batch_size": t["batch_size"], "train_samples_per_s_per_gpu": t["samples_per_s_per_gpu"],
                    "train_mfu": t.get("mfu"), "train_date": t.get("date"),
                    "step_samples_per_s_per_gpu": s and s["samples_per_s_per_gpu"], "step_mfu": s and s.get("mfu"),
                    "train_over_step": round(t["samples_per_s_per_gpu"] / s["samples_per_s_per_gpu"], 3) if s else None,
                    "data_wait_share": t.get("data_wait_share"), "checkpoint_s": t.get("checkpoint_s")})
    return out


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "benchmarks/results.json")
    rows = json.loads(path.read_text())["results"] if path.is_file() else []
    found = gap(rows)
    for g in found:
        print(json.dumps({"bench": "gap", **g}))
    if not found:
        print("gpu_gap: no end-to-end (bench: train) rows for the paper preset yet")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
