"""Stage 1 measured by images seen: reconstruction FID at logging.eval_every_images points,
appended to <run>/eval.jsonl once per point, a SIGKILLed run included."""
import json

import pytest

from vlv_ray.config import ConfigError
from vlv_ray.eval.during import due, recorded
from vlv_ray.train import launch

from helpers import JOBS, callbacks, steps_run, tiny_job

FEATURES = "vlv_ray.toyworld.reader:feature_extractor"


def test_a_point_is_due_once_when_the_images_seen_pass_it():
    assert due([16, 40], 8, 16, set()) == [16]  # reached exactly
    assert due([16, 40], 16, 24, set()) == []  # already passed
    assert due([16, 40], 8, 48, set()) == [16, 40]  # one large step passes both
    assert due([16, 40], 8, 16, {16}) == []  # recorded: never again


def test_eval_by_images_needs_stage_1_and_a_held_out_set():
    from vlv_ray.config import load_job

    with pytest.raises(ConfigError, match=r"logging.eval_every_images: needs stage 1 and logging.eval_data"):
        load_job(JOBS / "tiny.yaml", ["data.uri=x", "logging.eval_every_images=[100]"])
    with pytest.raises(ConfigError, match=r"expected image counts ≥ 1"):
        load_job(JOBS / "tiny.yaml", ["data.uri=x", "logging.eval_data=y", "logging.eval_every_images=[0]"])


def test_eval_by_images_survives_a_sigkill_and_counts_each_point_once(ray_cluster, tiny_dataset, tmp_path):
    # 2 workers × batch 4 = 8 images a step: step 2 passes 16 images, step 5 passes 40. The worker
    # is SIGKILLed right after step 5 (its evaluation written, the step-4 checkpoint the last):
    # the resumed run passes 40 again and finds it recorded.
    trace = tmp_path / "trace.txt"
    cfg = tiny_job(tiny_dataset, tmp_path / "runs", "name=byimages", "checkpoint.max_failures=1", "max_steps=6",
                   "checkpoint.every_steps=4", "logging.eval_every_images=[16,40]", f"logging.eval_data={tiny_dataset}",
                   "logging.eval_fid_images=12", f"logging.eval_features={FEATURES}", "logging.eval_sample_steps=2",
                   callbacks(("TraceKeys", {"file": str(trace)}), ("KillAfter", {"step": 5, "rank": 0})))
    result = launch.run(cfg)
    assert result.error is None and result.metrics["resumed_from"] == 4
    assert steps_run(trace)[0] == [1, 2, 3, 4, 5, 5, 6]  # step 5 ran twice
    lines = recorded(str(tmp_path / "runs" / "byimages" / "eval.jsonl"))
    assert [(r["images_seen"], r["step"]) for r in lines] == [(16, 2), (40, 5)]
    for r in lines:
        assert r["fid"] > 0 and r["usd"] is not None
        assert r["protocol"]["images"] == 12 and r["protocol"]["features"] == FEATURES
    assert lines[0]["fid"] != lines[1]["fid"]  # the encoder changed between the points
    # A resumed run past the last point adds nothing.
    more = launch.run(tiny_job(tiny_dataset, tmp_path / "runs", "name=byimages", "max_steps=7",
                               "checkpoint.every_steps=4", "logging.eval_every_images=[16,40]",
                               f"logging.eval_data={tiny_dataset}", "logging.eval_fid_images=12",
                               f"logging.eval_features={FEATURES}", "logging.eval_sample_steps=2"))
    assert more.error is None
    assert recorded(str(tmp_path / "runs" / "byimages" / "eval.jsonl")) == lines
    json.dumps(lines)  # plain JSON, as written
