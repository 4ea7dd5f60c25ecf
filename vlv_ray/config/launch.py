"""`launch:` in a job: what `vlv-ray launch` does around the run on a cluster it starts.

Part of the job schema (`vlv_ray.config.JobConfig.launch`), read by vlv_ray/launch; it
imports nothing of the project but `vlv_ray.typed`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LaunchConfig:
    """`vlv-ray launch` (vlv_ray/launch): what happens around the run on a cluster it starts."""

    # Where launch copies <storage_path>/<name>/export/ when the job ends, before the cluster
    # is torn down (a local path or URI); empty: the exports stay in the run directory.
    export_to: str = ""
