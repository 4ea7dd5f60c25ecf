"""What the cost model needs to know about a GPU and an instance's network, each with its source.

GPU figures are the vendor datasheet's: dense bf16 tensor-core TFLOP/s (the datasheets print
the 2:4-sparsity figure first; dense is half of it), memory bandwidth, and the GPU-to-GPU
link inside a node (NVLink, else PCIe). A GPU missing here (A10G: NVIDIA publishes no
datasheet for AWS's part; T4, V100, P100, P4: no bf16 tensor cores) gets no throughput
estimate, and the planner says so instead of guessing.

Instance network bandwidth: SkyPilot's catalogs do not carry it. `NETWORK` lists the
published figure of the single-GPU instance types the planner may spread across nodes, each
naming its page; any other instance's network is "unknown" (`network_gbps` returns None).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    bf16_tflops: float  # dense
    memory_gb: float
    bandwidth_gbs: float  # HBM/GDDR GB/s
    link_gbs: float  # GPU-to-GPU inside a node, GB/s per direction (NVLink, else PCIe)
    link: str
    source: str


GPUS = {
    "H200": GPU(989.0, 141, 4800, 450, "NVLink 900 GB/s", "https://www.nvidia.com/en-us/data-center/h200/"),
    "H100": GPU(989.0, 80, 3350, 450, "NVLink 900 GB/s", "https://www.nvidia.com/en-us/data-center/h100/"),
    "A100-80GB": GPU(312.0, 80, 2039, 300, "NVLink 600 GB/s", "https://www.nvidia.com/en-us/data-center/a100/"),
    "A100-40GB": GPU(312.0, 40, 1555, 300, "NVLink 600 GB/s", "https://www.nvidia.com/en-us/data-center/a100/"),
    "L40S": GPU(362.05, 48, 864, 32, "PCIe Gen4 x16 64 GB/s", "https://www.nvidia.com/en-us/data-center/l40s/"),
    "L4": GPU(121.0, 24, 300, 32, "PCIe Gen4 x16 64 GB/s", "https://www.nvidia.com/en-us/data-center/l4/"),
    "B200": GPU(2250.0, 180, 8000, 900, "NVLink 1.8 TB/s", "https://www.nvidia.com/en-us/data-center/hgx/"),
}
NO_SPEC = {"A10G": "NVIDIA publishes no datasheet for AWS's A10G", "T4": "no bf16 tensor cores",
           "V100": "no bf16 tensor cores", "P100": "no bf16 tensor cores", "P4": "no bf16 tensor cores"}

# Published network bandwidth (Gbit/s) of single-GPU instance types; "up to" figures are burst ceilings.
NETWORK = {
    "g4dn.xlarge": (25.0, "up to", "https://aws.amazon.com/ec2/instance-types/g4/"),
    "g5.xlarge": (10.0, "up to", "https://aws.amazon.com/ec2/instance-types/g5/"),
    "g6.xlarge": (10.0, "up to", "https://aws.amazon.com/ec2/instance-types/g6/"),
    "g6e.xlarge": (20.0, "up to", "https://aws.amazon.com/ec2/instance-types/g6e/"),
    "g6e.2xlarge": (20.0, "up to", "https://aws.amazon.com/ec2/instance-types/g6e/"),
    "a2-highgpu-1g": (24.0, "max egress", "https://cloud.google.com/compute/docs/gpus#a100-gpus"),
    "g2-standard-4": (10.0, "max egress", "https://cloud.google.com/compute/docs/gpus#l4-gpus"),
    "g2-standard-8": (16.0, "max egress", "https://cloud.google.com/compute/docs/gpus#l4-gpus"),
}


def network_gbps(instance_type: str) -> tuple[float, str] | None:
    """(Gbit/s, where from) for an instance type, or None: unknown."""
    if instance_type not in NETWORK:
        return None
    gbps, kind, url = NETWORK[instance_type]
    return gbps, f"{kind} {gbps:g} Gbit/s ({url})"
