"""SkyPilot-format catalogs: per-region aggregates, GCP's GPU + host VM sum, and `cost prices`."""
import json
import subprocess
import sys

import pytest

from vlv_ray.cost import catalog, skypilot
from vlv_ray.cost.catalog import Price

from helpers import REPO  # noqa: E402

# Rows in SkyPilot's formats (copied from the catalogs the snapshot was built from; two zones each).
AWS = """InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone,Arch
g6e.xlarge,L40S,1.0,4.0,32.0,"{'Gpus': [{'Name': 'L40S', 'Manufacturer': 'NVIDIA', 'Count': 1, 'LogicalGpuCount': 1, 'GpuPartitionSize': 1.0, 'Workloads': ['ml-ai', 'graphics'], 'MemoryInfo': {'SizeInMiB': 45776}}], 'TotalGpuMemoryInMiB': 45776}",1.861,1.197500,us-east-1,use1-az1,x86_64
g6e.xlarge,L40S,1.0,4.0,32.0,"{'Gpus': [{'Name': 'L40S', 'Manufacturer': 'NVIDIA', 'Count': 1, 'LogicalGpuCount': 1, 'GpuPartitionSize': 1.0, 'Workloads': ['ml-ai', 'graphics'], 'MemoryInfo': {'SizeInMiB': 45776}}], 'TotalGpuMemoryInMiB': 45776}",1.861,0.915400,us-east-1,use1-az2,x86_64
g6e.xlarge,L40S,1.0,4.0,32.0,"{'Gpus': [{'Name': 'L40S', 'Manufacturer': 'NVIDIA', 'Count': 1, 'LogicalGpuCount': 1, 'GpuPartitionSize': 1.0, 'Workloads': ['ml-ai', 'graphics'], 'MemoryInfo': {'SizeInMiB': 45776}}], 'TotalGpuMemoryInMiB': 45776}",1.861,1.049200,us-east-1,use1-az6,x86_64
m6i.xlarge,,,4.0,16.0,,0.192,0.083000,us-east-1,use1-az1,x86_64
c5.xlarge,,,4.0,8.0,,0.17,0.070000,us-east-1,use1-az1,x86_64
g6f.2xlarge,L4,0.25,8.0,32.0,"{'Gpus': [{'Name': 'L4', 'Manufacturer': 'NVIDIA', 'Count': 0, 'LogicalGpuCount': 1, 'GpuPartitionSize': 0.25, 'Workloads': ['graphics', 'ml-ai'], 'MemoryInfo': {'SizeInMiB': 5722}}], 'TotalGpuMemoryInMiB': 5722}",0.475,0.169700,us-east-1,use1-az1,x86_64
"""
GCP = """InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,AvailabilityZone,Price,SpotPrice
a2-highgpu-1g,12.0,85.0,,,,us-central1,us-central1-a,0.73948,0.36975
a2-highgpu-1g,12.0,85.0,,,,us-central1,us-central1-b,0.73948,0.36975
a2-highgpu-1g,12.0,85.0,,,,us-central1,us-central1-f,0.73948,0.36975
,,,A100,1,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 40960}}]},us-central1,us-central1-a,2.93391,1.4341
,,,A100,1,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 40960}}]},us-central1,us-central1-b,2.93391,1.5341
,,,A100,2,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 40960}}]},us-central1,us-central1-f,5.86782,2.8682
n2-standard-4,4.0,16.0,,,,us-central1,us-central1-a,0.194236,0.04716
"""


def test_aws_regions_keep_spot_min_median_max_and_drop_what_is_not_a_training_node():
    rows = {r["instance_type"]: Price(**r, price_date="-", source="-") for r in skypilot.parse(AWS, "aws.csv", "aws")}
    assert set(rows) == {"g6e.xlarge", "m6i.xlarge"}  # c5 is no listed head; g6f is a quarter GPU
    g = rows["g6e.xlarge"]
    assert (g.gpu_model, g.gpus, g.gpu_memory_gib, g.vcpus, g.zones) == ("L40S", 1, 44.7, 4, 3)
    assert (g.on_demand_usd_per_hour, g.spot_min, g.spot_usd_per_hour, g.spot_max) == (1.861, 0.9154, 1.0492, 1.1975)
    assert g.cheapest_zone == "use1-az2"
    assert skypilot.guess_cloud(AWS, "aws.csv") == "aws" and skypilot.guess_cloud(GCP, "gcp.csv") == "gcp"


def test_gcp_prices_the_gpu_and_its_host_vm_together_zone_by_zone():
    rows = {r["instance_type"]: Price(**r, price_date="-", source="-") for r in skypilot.parse(GCP, "gcp.csv", "gcp")}
    a2 = rows["a2-highgpu-1g"]
    # us-central1-f lists only a 2-GPU price: that zone has no price for the 1-GPU machine.
    assert (a2.gpu_model, a2.gpus, a2.zones) == ("A100-40GB", 1, 2)
    assert a2.on_demand_usd_per_hour == pytest.approx(0.73948 + 2.93391)
    assert (a2.spot_min, a2.spot_max) == (pytest.approx(0.36975 + 1.4341), pytest.approx(0.36975 + 1.5341))
    assert rows["n2-standard-4"].gpus == 0 and rows["n2-standard-4"].on_demand_usd_per_hour == 0.194236


def test_the_snapshot_names_its_sources_and_spans_regions():
    cat = catalog.load()
    assert {"aws", "gcp"} <= set(cat.meta)
    for cloud, m in cat.meta.items():
        assert len(m["commit"]) == 40 and m["repo"] and m["date"][:4].isdigit(), cloud
    regions = {c: {p.region for p in cat.rows if p.cloud == c} for c in ("aws", "gcp")}
    assert len(regions["aws"]) >= 10 and len(regions["gcp"]) >= 10
    a2 = cat.lookup("a2-highgpu-1g", "us-central1")
    assert a2.gpu_model == "A100-40GB" and a2.spot_min <= a2.spot_usd_per_hour <= a2.spot_max


def cli(*args):
    return subprocess.run([sys.executable, "-m", "vlv_ray.cli", "cost", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_cost_prices_reads_a_newer_download_and_user_rows(tmp_path):
    aws, mine = tmp_path / "vms.csv", tmp_path / "mine.csv"
    aws.write_text(AWS)
    mine.write_text(",".join(catalog.USER_COLUMNS) + "\nonprem,lab,dgx-a,H100,8,128,1024,10,,2026-01,internal,\n")
    r = cli("prices", "--from", str(aws), "--from", str(mine), "--replace", "--json")
    assert r.returncode == 0, r.stderr
    clouds = json.loads(r.stdout)["clouds"]
    assert clouds["aws"]["instance_types"] == ["g6e.xlarge", "m6i.xlarge"]  # --replace: the download's rows only
    assert clouds["aws"]["regions"] == ["us-east-1"] and clouds["onprem"]["rows"] == 1
    assert clouds["gcp"]["rows"] > 100  # other clouds stay
    g6e = clouds["aws"]["instances"]["g6e.xlarge"]  # what the planner needs of each instance
    assert (g6e["gpus"], g6e["gpu_memory_gib"], g6e["vcpus"]) == (1, 44.7, 4) and "20 Gbit/s" in g6e["network"]
    assert clouds["aws"]["instances"]["m6i.xlarge"]["network"] == "unknown"
    r = cli("prices")
    assert r.returncode == 0 and "skypilot-org/skypilot-catalog" in r.stdout and "anycloud-sh/catalog" in r.stdout


def test_a_catalog_in_neither_format_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,price\nfoo,1\n")
    r = cli("prices", "--from", str(bad))
    assert r.returncode == 2 and r.stderr.startswith("vlv-ray: error: ") and len(r.stderr.strip().splitlines()) == 1
    assert str(bad) in r.stderr and "SkyPilot" in r.stderr and "user format" in r.stderr
