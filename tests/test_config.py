"""Job configs: strict validation with messages that name the key, value and what is allowed."""

import pytest

from vlv_ray.config import ConfigError, JobConfig, JobsSweepConfig, SweepConfig, from_dict, load_job, load_sweep

from helpers import JOBS, REPO


def minimal(**extra) -> dict:
    d = {"name": "t", "storage_path": "/tmp/runs", "data": {"uri": "/tmp/data"}, "model": {"preset": "tiny"}}
    d.update(extra)
    return d


SWEEPS = sorted(JOBS.glob("*-sweep.yaml"))


@pytest.mark.parametrize("job", sorted(p for p in JOBS.glob("*.yaml") if p.name != "runtime_env.yaml"
                                       and p not in SWEEPS), ids=lambda p: p.name)
def test_shipped_jobs_validate(job):
    cfg = load_job(job)
    assert isinstance(cfg, JobConfig) and cfg.name


@pytest.mark.parametrize("sweep", SWEEPS, ids=lambda p: p.name)
def test_shipped_sweeps_validate_and_are_not_jobs(sweep):
    spec = load_sweep(sweep)
    assert spec.images and (isinstance(spec, JobsSweepConfig) or (isinstance(spec, SweepConfig) and spec.queries))
    with pytest.raises(ConfigError, match=r"a sweep file \(stage1/stage2 keys\), not a job: run `vlv-ray sweep"):
        load_job(sweep)


def test_paper_stage1_has_the_papers_hyperparameters():
    cfg = load_job(JOBS / "stage1-paper.yaml")
    assert cfg.global_batch_size == 512 and cfg.max_steps == 200_000
    assert cfg.optim.lr == 5e-5 and cfg.optim.betas == [0.9, 0.99] and cfg.optim.weight_decay == 0.01
    assert cfg.deepspeed.zero_stage == 2
    # Not the paper's fp32: bf16 everywhere, no recompute (benchmarks/bench_step.py "ours").
    assert cfg.deepspeed.precision == "bf16" and cfg.model.frozen_dtype == "bf16"
    assert cfg.model.gradient_checkpointing == [] and cfg.model.attention == "sdpa"
    assert cfg.optim.grad_clip == 1.0 and cfg.model.num_queries == 77 and cfg.data.resolution == 384


def test_paper_stage2_has_the_papers_hyperparameters():
    cfg = load_job(JOBS / "stage2-paper.yaml")
    assert cfg.global_batch_size == 64 and cfg.max_steps == 100_000
    assert cfg.optim.lr == 1e-5 and cfg.optim.schedule == "linear" and cfg.deepspeed.precision == "bf16"


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match=r"optim\.lrr: unknown key; did you mean 'optim\.lr'\?"):
        from_dict(minimal(optim={"lrr": 1e-4}))
    with pytest.raises(ConfigError, match=r"datta: unknown key; did you mean 'data'\?"):
        from_dict(minimal(datta={}))


def test_unknown_key_without_near_match_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"scaling\.zzz: unknown key; valid keys: num_workers"):
        from_dict(minimal(scaling={"zzz": 1}))


@pytest.mark.parametrize("override, message", [
    ("optim.lr=fast", r"optim\.lr: got 'fast', expected a number"),
    ("scaling.use_gpu=maybe", r"scaling\.use_gpu: got 'maybe', expected true/false"),
    ("data.batch_size=2.5", r"data\.batch_size: got 2\.5, expected an integer"),
    ("deepspeed.precision=fp8", r"deepspeed\.precision: got 'fp8', expected one of 'fp32', 'bf16', 'fp16'"),
    ("data=3", r"data: got 3, expected a mapping"),
])
def test_wrong_type_names_key_value_and_allowed(override, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(minimal(), [override])


@pytest.mark.parametrize("override, message", [
    ("deepspeed.zero_stage=4", r"deepspeed\.zero_stage: got 4, expected a value in \[0, 3\]"),
    ("optim.lr=0", r"optim\.lr: got 0\.0, expected a value in \(0\.0, 1\.0\]"),
    ("data.batch_size=0", r"data\.batch_size: got 0, expected a value in \[1, inf\]"),
    ("model.num_queries=100", r"model\.num_queries: got 100, expected a value in \[1, 77\]"),
])
def test_out_of_range_names_key_value_and_range(override, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(minimal(), [override])


def test_overrides_parse_yaml_scalars_including_bare_exponents():
    cfg = from_dict(minimal(), ["optim.lr=2e-4", "optim.betas=[0.8, 0.95]", "scaling.use_gpu=false",
                                "cost.budget_usd=12"])
    assert cfg.optim.lr == 2e-4 and cfg.optim.betas == [0.8, 0.95]
    assert cfg.scaling.use_gpu is False and cfg.cost.budget_usd == 12.0


def test_cross_field_checks():
    with pytest.raises(ConfigError, match=r"optim\.warmup_steps: got 10, expected fewer than max_steps \(5\)"):
        from_dict(minimal(max_steps=5), ["optim.warmup_steps=10"])
    with pytest.raises(ConfigError, match=r"model\.florence: required for preset 'paper'"):
        from_dict(minimal(model={"preset": "paper"}))
    with pytest.raises(ConfigError, match=r"name: required"):
        from_dict(minimal(name=""))


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {uri: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+: malformed YAML"):
        load_job(bad)


def test_redaction_and_hash():
    cfg = from_dict(minimal())
    d = cfg.to_dict()
    assert d["optim"]["lr"] == cfg.optim.lr  # nothing secret-looking is masked by accident
    # max_steps and names do not change the numerics hash; lr does.
    assert from_dict(minimal(max_steps=7, name="u")).config_hash() == cfg.config_hash()
    assert from_dict(minimal(), ["optim.lr=1e-3"]).config_hash() != cfg.config_hash()


def test_config_show_redacts_by_value_not_by_key_name(tmp_path):
    """A password in a URL and an environment secret pasted into a value are masked;
    `model.max_caption_tokens` (a name with "token" in it) is shown as it is."""
    import os
    import subprocess
    import sys

    repo = REPO
    secret = "sentinel-pasted-5b1e"
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": secret}
    r = subprocess.run([sys.executable, "-m", "vlv_ray.cli", "config", "show", "jobs/tiny.yaml",
                        "storage.endpoint_url=http://AKIAKEY:URLSECRET@minio.local:9000",
                        f"storage_path=s3://bucket/{secret}/runs", "model.max_caption_tokens=123"],
                       cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "URLSECRET" not in r.stdout and "AKIAKEY" not in r.stdout and secret not in r.stdout
    assert "endpoint_url: http://***@minio.local:9000" in r.stdout
    assert "storage_path: s3://bucket/***/runs" in r.stdout
    assert "max_caption_tokens: 123" in r.stdout


def test_toy_preset_takes_at_most_the_teachers_clip_positions():
    from vlv_ray.toyworld import tokens
    from vlv_ray.toyworld.models import NUM_QUERIES

    assert NUM_QUERIES == tokens.MAX_TEXT_TOKENS
    assert load_job(JOBS / "toy-stage1.yaml", ["model.num_queries=16"]).model.num_queries == 16
    with pytest.raises(ConfigError, match=r"model\.num_queries: got 17, expected at most 16 for preset 'toy'"):
        load_job(JOBS / "toy-stage1.yaml", ["model.num_queries=17"])
