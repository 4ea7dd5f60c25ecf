"""RunPaths: one value owns a run's paths, built once from the absolutized job."""
import os

from vlv_ray.config import from_dict
from vlv_ray.paths import RunPaths, for_job


def job(**kw):
    return from_dict({"name": "r1", "storage_path": "runs", "data": {"uri": "data/ds"}, "model": {"preset": "tiny"},
                      **kw})


def test_local_paths_become_absolute_uris_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg, paths = for_job(job(stage=2, model={"preset": "tiny", "stage1": "exp/stage1"},
                             logging={"wandb_dir": "wb"}))
    assert cfg.storage_path == str(tmp_path / "runs") and cfg.data.uri == str(tmp_path / "data" / "ds")
    assert cfg.model.stage1 == str(tmp_path / "exp" / "stage1") and cfg.logging.wandb_dir == str(tmp_path / "wb")
    assert paths.run == str(tmp_path / "runs" / "r1") and os.path.isabs(paths.run)
    s3, s3_paths = for_job(job(storage_path="s3://b/runs", storage={"endpoint_url": "http://127.0.0.1:9"}))
    assert s3.storage_path == "s3://b/runs" and s3_paths.run == "s3://b/runs/r1"
    assert s3_paths.storage == {"endpoint_url": "http://127.0.0.1:9", "region": None}
    assert for_job(cfg)[0] == cfg  # idempotent: a worker's job is already absolute


def test_the_run_layout():
    p = RunPaths("s3://b/runs/r1", {"endpoint_url": None, "region": "eu"})
    assert (p.checkpoints, p.export(2), p.logs, p.cost, p.eval, p.rejects, p.history, p.lease) == (
        "s3://b/runs/r1", "s3://b/runs/r1/export/stage2", "s3://b/runs/r1/logs", "s3://b/runs/r1/cost",
        "s3://b/runs/r1/eval", "s3://b/runs/r1/rejects", "s3://b/runs/r1/history.jsonl", "s3://b/runs/r1/_LEASE.json")
    assert RunPaths(**p.to_dict()) == p  # what the workers get in loop_config["paths"]
