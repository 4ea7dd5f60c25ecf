"""Fault tests with real processes: a worker SIGKILLed, a worker SIGTERMed (spot notice)."""
from collections import Counter

from vlv_ray.train import launch

from helpers import callbacks, keys_seen, steps_run, tiny_job


def run(dataset, tmp_path, name, fault, *overrides):
    """Train with a trace of the keys of every step, then `fault` = (callback class, args)."""
    trace = tmp_path / "trace.txt"
    cfg = tiny_job(dataset, tmp_path / "runs", f"name={name}", "checkpoint.max_failures=1", *overrides,
                   callbacks(("TraceKeys", {"file": str(trace)}), fault))
    result = launch.run(cfg)
    return result, steps_run(trace)


def test_sigkilled_worker_restarts_from_last_checkpoint(ray_cluster, tiny_dataset, tmp_path):
    # 64 rows, 2 workers × batch 4: steps 1-8 are exactly one epoch.
    result, steps = run(tiny_dataset, tmp_path, "killed", ("KillAfter", {"step": 3, "rank": 1}),
                        "max_steps=8", "checkpoint.every_steps=2")
    assert result.error is None
    assert result.metrics["step"] == 8 and result.metrics["resumed_from"] == 2 and result.metrics["epoch"] == 0
    # Steps 1-2 (before the checkpoint) ran once; step 3 (after it) ran again; then 4-8.
    assert steps[0] == [1, 2, 3, 3, 4, 5, 6, 7, 8]
    assert steps[1] == [1, 2, 3, 3, 4, 5, 6, 7, 8]
    # Mid-epoch resume: the epoch goes on from the checkpoint's data position, so every
    # key is seen, and only the keys of the redone step (3: 2 ranks × 4) are seen twice.
    seen = Counter(keys_seen(tmp_path / "trace.txt"))
    assert len(seen) == 64
    assert sum(seen.values()) - 64 == 8 and max(seen.values()) == 2


def test_sigterm_checkpoints_the_current_step_and_resume_loses_nothing(ray_cluster, tiny_dataset, tmp_path):
    result, steps = run(tiny_dataset, tmp_path, "preempted", ("SigtermAfter", {"step": 3, "rank": 1}),
                        "max_steps=5", "checkpoint.every_steps=100")
    assert result.error is None
    # The SIGTERM checkpoint holds step 3 although the interval (100) never came due.
    assert result.metrics["resumed_from"] == 3 and result.metrics["step"] == 5
    assert steps[0] == [1, 2, 3, 4, 5] and steps[1] == [1, 2, 3, 4, 5]  # nothing lost, nothing redone
    keys = keys_seen(tmp_path / "trace.txt")
    assert len(keys) == 5 * 2 * 4 and len(set(keys)) == len(keys)  # and no row served twice
