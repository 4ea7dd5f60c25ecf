"""wandb from rank 0: offline by default, stable run id per job name, no secrets in config."""
import re
from pathlib import Path

from vlv_ray.config import from_dict
from vlv_ray.paths import RunPaths
from vlv_ray.train.metrics import MetricsLogger, wandb_run_id

SECRET = "not-a-real-key-42d1e0"


def job(tmp_path, **logging):
    return from_dict({"name": "runs/exp one", "storage_path": str(tmp_path), "data": {"uri": str(tmp_path)},
                      "model": {"preset": "tiny"}, "logging": {"wandb_dir": str(tmp_path / "wb"), **logging}})


def metrics(step: int) -> dict:
    return {"step": step, "epoch": 0, "loss": 1.5, "lr": 1e-4, "grad_norm": 0.5, "samples_per_s": 8.0,
            "tokens_per_s": 0.0, "step_time_s": 0.5, "data_wait_s": 0.1, "rejected_rows": 0, "cost_usd": 0.0}


def test_run_id_is_stable_and_safe():
    assert wandb_run_id("runs/exp one") == wandb_run_id("runs/exp one")
    assert wandb_run_id("runs/exp one") != wandb_run_id("runs/exp two")
    assert set(wandb_run_id("a/b c:d")) <= set("abcdefghijklmnopqrstuvwxyz0123456789-_")


def test_offline_run_on_rank0_only_and_secret_free(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    cfg = job(tmp_path)
    assert cfg.logging.wandb == "offline"
    assert MetricsLogger(cfg, RunPaths.of(cfg), rank=1).run is None
    logger = MetricsLogger(cfg, RunPaths.of(cfg), rank=0)
    try:
        assert logger.run is not None and logger.run.id == wandb_run_id(cfg.name)
        assert logger.run.settings.mode == "offline"
        logger.log_step(metrics(1))
        assert SECRET not in repr(dict(logger.run.config))
    finally:
        logger.close()
    files = [p for p in Path(tmp_path / "wb").rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    assert not any(SECRET.encode() in p.read_bytes() for p in files)


def test_disabled_makes_no_run(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert MetricsLogger(job(tmp_path, wandb="disabled"), RunPaths(str(tmp_path)), rank=0).run is None


def test_logs_on_the_interval_the_first_step_of_a_run_and_the_last_on_rank0_only(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = from_dict({**job(tmp_path, wandb="disabled", every_steps=4).to_dict(redact=False), "max_steps": 10})
    for rank in (0, 1):
        logger = MetricsLogger(cfg, RunPaths.of(cfg), rank=rank, first_step=2)  # resumed at step 2
        for step in range(3, 11):
            logger.log_step(metrics(step))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" |")[0].split(" ", 1)[1] for line in lines] == ["step 3/10", "step 4/10", "step 8/10",
                                                                       "step 10/10"]
    assert all(re.match(r"\d\d:\d\d:\d\d step ", line) for line in lines)  # a timestamp leads each line
