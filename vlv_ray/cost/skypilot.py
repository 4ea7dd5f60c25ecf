"""SkyPilot-format catalogs (`skypilot-catalog`'s `catalogs/v8/<cloud>/vms.csv`) → per-region prices.

One input row per (instance type, availability zone). What is kept: GPU instance types and
the CPU head types of `HEADS`, in every region. Spot prices float by zone, so each region
keeps the minimum, median and maximum across its zones; on-demand is one list price per
region (the median across zones, which agree).

GCP lists a GPU and its host VM as separate rows (the GPU row has no InstanceType): for the
machine families whose GPUs come with the machine type (a2, a3, a4, g2) the GPU row of the
same zone, accelerator and count is added to the VM row, as SkyPilot does when it prices
them. A zone that lacks either half has no price.
"""
from __future__ import annotations

import csv
import io
import re
import statistics

# The columns that mark a SkyPilot-format catalog (the order differs between clouds).
COLUMNS = ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "GpuInfo",
           "Price", "SpotPrice", "Region", "AvailabilityZone")
HEADS = ("m6i.xlarge", "m6i.2xlarge", "n2-standard-4", "n2-standard-8")
# Catalog accelerator names → the names the cost model knows; GCP's and AWS's plain "A100" is the 40 GB part.
GPU_NAMES = {"A100": "A100-40GB", "H100-MEGA": "H100"}
# GCP machine families with bundled GPUs: machine type → (accelerator, count). The pattern's
# group is the GPU count where the name carries it (a2-highgpu-8g); g2's count is by size.
_G2_GPUS = {"4": 1, "8": 1, "12": 1, "16": 1, "32": 1, "24": 2, "48": 4, "96": 8}
_GCP_FAMILIES = (
    (re.compile(r"^a2-highgpu-(\d+)g$"), "A100"), (re.compile(r"^a2-megagpu-(\d+)g$"), "A100"),
    (re.compile(r"^a2-ultragpu-(\d+)g$"), "A100-80GB"), (re.compile(r"^a3-highgpu-(\d+)g$"), "H100"),
    (re.compile(r"^a3-megagpu-(\d+)g$"), "H100-MEGA"), (re.compile(r"^a3-ultragpu-(\d+)g$"), "H200"),
    (re.compile(r"^a4-highgpu-(\d+)g$"), "B200"),
)
_GPU_MEM = re.compile(r"'SizeInMiB':\s*(\d+)")


class FormatError(ValueError):
    """Not a SkyPilot-format catalog, or a row of one that cannot be read."""


def is_skypilot(header: list[str]) -> bool:
    return set(COLUMNS) <= set(header)


def _gcp_gpu(instance: str) -> tuple[str, int] | None:
    if m := re.match(r"^g2-standard-(\d+)$", instance):
        return ("L4", _G2_GPUS[m.group(1)]) if m.group(1) in _G2_GPUS else None
    for pattern, acc in _GCP_FAMILIES:
        if m := pattern.match(instance):
            return acc, int(m.group(1))
    return None


def _num(where: str, col: str, raw: str) -> float | None:
    raw = (raw or "").strip()
    if raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise FormatError(f"{where}: {col}: got {raw!r}, expected a number") from None


def parse(text: str, origin: str, cloud: str) -> list[dict]:
    """Per-region prices of the GPU instance types and CPU heads in a SkyPilot vms.csv, as the
    keyword arguments of `catalog.Price` (less its date and source)."""
    reader = csv.DictReader(io.StringIO(text))
    if not is_skypilot(reader.fieldnames or []):
        raise FormatError(f"{origin}: header: expected SkyPilot's columns {','.join(COLUMNS)}")
    vms, gpus = [], {}
    for i, r in enumerate(reader, start=2):
        where = f"{origin}: row {i}"
        price, spot = _num(where, "Price", r["Price"]), _num(where, "SpotPrice", r["SpotPrice"])
        inst = (r["InstanceType"] or "").strip()
        if not inst:  # GCP: a GPU priced on its own
            key = (r["AvailabilityZone"], r["AcceleratorName"], int(float(r["AcceleratorCount"] or 0)))
            gpus[key] = (price, spot, r["GpuInfo"] or "")
            continue
        vms.append((where, r, inst, price, spot))
    zones: dict[tuple[str, str], list] = {}
    for where, r, inst, price, spot in vms:
        acc, info = (r["AcceleratorName"] or "").strip(), r["GpuInfo"] or ""
        count = _num(where, "AcceleratorCount", r["AcceleratorCount"])
        if cloud == "gcp" and (bundled := _gcp_gpu(inst)):
            acc, count = bundled
            gpu = gpus.get((r["AvailabilityZone"], acc, count))
            if gpu is None:
                continue  # no GPU price in this zone: the VM alone would understate it
            price = None if price is None or gpu[0] is None else price + gpu[0]
            spot = None if spot is None or gpu[1] is None else spot + gpu[1]
            info = gpu[2]
        if not acc and inst not in HEADS:
            continue
        if acc and (count is None or count < 1):
            continue  # fractional GPUs (AWS g6f) and TPUs are not training nodes here
        mem = _GPU_MEM.search(info)
        row = (GPU_NAMES.get(acc, acc), int(count or 0), int(mem.group(1)) / 1024 if mem else 0.0,
               int(_num(where, "vCPUs", r["vCPUs"]) or 0), _num(where, "MemoryGiB", r["MemoryGiB"]) or 0.0, price, spot,
               r["AvailabilityZone"].strip())
        zones.setdefault((r["Region"].strip(), inst), []).append(row)
    out = []
    for (region, inst), rows in sorted(zones.items()):
        gpu_model, count, gpu_mem, vcpus, mem = rows[0][:5]
        od = [x[5] for x in rows if x[5] is not None]
        sp = [x[6] for x in rows if x[6] is not None]
        zone = min(rows, key=lambda x: (x[6] is None, x[6] or 0.0, x[7]))[7]
        out.append(dict(cloud=cloud, region=region, instance_type=inst, gpu_model=gpu_model, gpus=count,
                        gpu_memory_gib=round(gpu_mem, 1), vcpus=vcpus, memory_gib=mem,
                        on_demand_usd_per_hour=statistics.median(od) if od else None,
                        spot_min=min(sp) if sp else None, spot_usd_per_hour=statistics.median(sp) if sp else None,
                        spot_max=max(sp) if sp else None, zones=len(rows), cheapest_zone=zone))
    if not out:
        raise FormatError(f"{origin}: no GPU instance type or CPU head ({', '.join(HEADS)}) in it")
    return out


def guess_cloud(text: str, origin: str) -> str:
    """aws or gcp, from the zone names (us-east-1a / use1-az1 vs us-central1-a)."""
    for r in csv.DictReader(io.StringIO(text)):
        zone = (r.get("AvailabilityZone") or "").strip()
        if re.match(r"^[a-z]+-[a-z]+\d+-[a-z]$", zone):
            return "gcp"
        if zone:
            return "aws"
    raise FormatError(f"{origin}: no rows")
