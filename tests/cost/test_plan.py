"""The cost model and `vlv-ray cost plan`: figures follow from the stated model; bad input is one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from vlv_ray.config import load_job
from vlv_ray.cost import hardware, model
from vlv_ray.cost.catalog import Catalog, Price

from helpers import REPO  # noqa: E402

STAGE1, STAGE2 = str(REPO / "jobs/stage1-paper.yaml"), str(REPO / "jobs/stage2-paper.yaml")


def price(instance, gpu, gpus, od, spot, region="r1", cloud="aws", mem=80.0):
    return Price(cloud, region, instance, gpu, gpus, 8 * gpus, 64.0, od, spot, "2026-01", "test",
                 spot_min=spot, spot_max=spot, gpu_memory_gib=mem)


def measured(sps=76.71, memory=((16, 19.12), (32, 29.66))):
    return model.Measured({"H200": (sps, "measured (step) on NVIDIA H200, batch 32", {"batch_size": 32})},
                          list(memory))


def test_a_quote_is_the_stated_model_worked_by_hand():
    cfg = load_job(STAGE1, [])
    head = price("m6i.xlarge", "", 0, 0.2, 0.1)
    p = price("p5en.48xlarge", "H200", 8, 60.0, 12.0, mem=141.0)
    cat = Catalog([p, head])
    q = model.quote(cfg, p, "on-demand", cat, measured())
    samples = 200_000 * 512
    comm = 2 * model.TRAINABLE_PARAMS[1] / 1e9 * 2 * 7 / 8 / hardware.GPUS["H200"].link_gbs
    wall = (samples / (76.71 * 8) + 200_000 * comm) / 3600
    assert (q.samples_per_s_per_gpu, q.estimated, q.nodes, q.preemptions) == (76.71, False, 1, 0.0)
    assert q.comm_s_per_step == pytest.approx(comm) and q.wall_hours == pytest.approx(wall)
    storage = cfg.cost.storage_gb * cfg.cost.storage_usd_per_gb_month * wall / 730
    assert q.total_usd == pytest.approx(60.0 * wall + 0.2 * wall + storage)
    # Spot: the whole cluster loses half a checkpoint interval + the restart per reclaim.
    s = model.quote(cfg, p, "spot", cat, measured())
    step_s = wall * 3600 / 200_000
    loss_h = (1000 * step_s / 2 + cfg.cost.restart_s) / 3600
    spot_wall = wall / (1 - cfg.cost.spot_preemptions_per_node_hour * loss_h)
    assert s.wall_hours == pytest.approx(spot_wall) and s.preemptions == pytest.approx(0.05 * spot_wall)
    assert s.gpu_usd == pytest.approx(12.0 * spot_wall)
    # A job key overrides the assumption.
    calm = load_job(STAGE1, ["cost.spot_preemptions_per_node_hour=0"])
    assert model.quote(calm, p, "spot", cat, measured()).wall_hours == pytest.approx(wall)


# Stage 1 at the batch the H200 rows were measured at (the job itself now runs 64 x 1).
AT_32 = ["data.batch_size=32", "deepspeed.grad_accum_steps=2"]


def test_an_unmeasured_gpu_is_estimated_from_peak_and_bandwidth_and_labelled():
    cfg = load_job(STAGE1, AT_32)
    l40s = price("g6e.xlarge", "L40S", 1, 1.861, 0.9, mem=44.7)
    q = model.quote(cfg, l40s, "spot", Catalog([l40s]), measured())
    a, t = hardware.GPUS["H200"], hardware.GPUS["L40S"]
    ratio = 0.125 + 0.875 * (0.53 * a.bf16_tflops / t.bf16_tflops + 0.47 * a.bandwidth_gbs / t.bandwidth_gbs)
    assert q.estimated and q.samples_per_s_per_gpu == pytest.approx(76.71 / ratio)
    assert q.nodes == 8 and "20 Gbit/s (https://aws.amazon.com/ec2/instance-types/g6e/)" in q.comm_from
    a10g = price("g5.xlarge", "A10G", 1, 1.0, 0.4, mem=22.4)
    assert "datasheet" in model.quote(cfg, a10g, "spot", Catalog([a10g]), measured())


def test_end_to_end_train_rows_come_before_bare_step_rows(tmp_path):
    def row(bench, sps, **kw):
        return {"bench": bench, "stage": 1, "preset": "paper", "config": "ours", "device": "NVIDIA H200",
                "batch_size": 32, "resolution": 384, "samples_per_s_per_gpu": sps, "date": "2026-11-26", **kw}
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"results": [row("train", 61.0, date="2026-11-01"), row("step", 76.71),
                                               row("step", 80.0, date="2026-12-24")]}))
    got = model.measured(1, results, resolution=384, batch_size=32)
    sps, where, _ = got.throughput["H200"]
    assert sps == 61.0 and where.startswith("measured (train)")  # the real path's figure wins, even if older


def test_memory_fits_as_is_with_recompute_or_not_at_all():
    cfg = load_job(STAGE1, AT_32)
    assert model.fit(cfg, 44.7, measured()) == ([], 1.0)  # L40S: 29.7 GiB at batch 32
    settings, factor = model.fit(cfg, 22.4, measured())  # L4: only with recompute, and slower
    assert settings == ["model.gradient_checkpointing=[unet]"] and factor < 1
    big = load_job(STAGE1, ["data.batch_size=1024"])
    assert "needs" in model.fit(big, 141.0, measured())
    # Stage 2 has one measured batch size: its whole peak counts as fixed at and below it.
    s2 = load_job(STAGE2, [])
    assert "needs" in model.fit(s2, 44.7, measured(memory=((8, 68.4),)))
    assert model.fit(s2, 80.0, measured(memory=((8, 68.4),))) == ([], 1.0)
    # … and every output says its memory rests on one point (an upper bound), or on two.
    assert "from one measured peak: an upper bound" in model.fit(s2, 44.7, measured(memory=((8, 68.4),)))
    assert "upper bound" not in model.fit(big, 141.0, measured())
    assert "one measured peak (68.4 GB at batch 8): an upper bound" in model.memory_basis(2, measured(memory=((8, 68.4),)))
    assert "19.12 GB at batch 16, 29.66 GB at batch 32" in model.memory_basis(1, measured())


def plan(*args, env=None):
    return subprocess.run([sys.executable, "-m", "vlv_ray.cli", "cost", "plan", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120, env=env)


def test_plan_ranks_markets_by_the_jobs_total_and_shows_each_rows_inputs():
    r = plan(STAGE1, STAGE2, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rows = out["rows"]
    assert 1 <= len(rows) <= 10 and [x["total_usd"] for x in rows] == sorted(x["total_usd"] for x in rows)
    for x in rows:
        assert [j["job"] for j in x["jobs"]] == ["stage1-paper", "stage2-paper"]
        assert x["total_usd"] == pytest.approx(sum(j["total_usd"] for j in x["jobs"]))
        for j in x["jobs"]:
            assert j["throughput_from"] and j["comm_from"] and j["head"] and j["usd_per_node_hour"] > 0
            assert x["estimated"] == any(j["estimated"] for j in x["jobs"])
    # Stage 2 (68 GiB at batch 8) fits no 48 GiB GPU: those markets are left out, and counted.
    assert any("micro-batch 8" in d["reason"] for d in out["dropped"])
    assert out["snapshot"]["aws"]["commit"] and out["assumptions"]
    assert any(a.startswith("memory, stage 2: one measured peak") for a in out["assumptions"])
    text = plan(STAGE1, "--clouds", "gcp").stdout
    assert "gcp" in text and " aws " not in text and "assumption:" in text


@pytest.mark.parametrize("cloud, env", [("aws", {}), ("gcp", {"VLV_GCP_PROJECT": "my-project-123"})])
def test_write_cluster_renders_a_launcher_yaml_that_validates(tmp_path, cloud, env):
    import ray

    out = tmp_path / f"{cloud}.yaml"
    r = plan(STAGE1, "--clouds", cloud, "--write-cluster", str(out), "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)["rows"][0]
    rendered = subprocess.run([str(REPO / "cluster/render"), str(out)], capture_output=True, text=True,
                              env={"PATH": os.environ["PATH"], **env}, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    cfg = yaml.safe_load(rendered.stdout)
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    assert cfg["provider"]["region"] == row["region"] and cfg["max_workers"] == row["jobs"][0]["nodes"]
    workers = [v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]]
    assert len(workers) == 1 and workers[0]["labels"]["vlv-ray/instance-type"] == row["instance_type"]
    assert workers[0]["labels"]["vlv-ray/market"] == row["market"] and workers[0]["max_workers"] == cfg["max_workers"]
    node = workers[0]["node_config"]
    assert (node.get("InstanceType") or node.get("machineType")) == row["instance_type"]
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["labels"]["vlv-ray/market"] == "on-demand" and head["resources"] == {"CPU": 0}


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    huge = tmp_path / "huge.yaml"
    huge.write_text(Path(STAGE2).read_text().replace("batch_size: 8", "batch_size: 64"))
    neither = tmp_path / "neither.csv"
    neither.write_text("a,b\n1,2\n")
    cases = [((STAGE1, "--clouds", "azure"), "--clouds: 'azure' is not a cloud"),
             ((STAGE1, "--budget", "10"), "--budget: $10.00 is below every row"),
             ((str(huge),), f"{huge}: data.batch_size: micro-batch 64 needs"),
             ((STAGE1, "--max-gpus", "0"), "--max-gpus: got 0"),
             ((STAGE1, "--prices", str(neither)), f"{neither}: header: expected SkyPilot's")]
    for args, msg in cases:
        r = plan(*args)
        assert r.returncode == 2 and r.stderr.startswith("vlv-ray: error: ") and msg in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
