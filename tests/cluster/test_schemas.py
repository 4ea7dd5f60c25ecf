"""Every cluster definition validates: launcher YAMLs against the JSON schema inside the
installed `ray` package, KubeRay manifests against KubeRay v1.7.0's CRD schemas (committed,
see cluster/kuberay/schema/SOURCE.md); every node type's labels name a priced instance type."""
import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from vlv_ray.cost import catalog
from vlv_ray.cost.meter import INSTANCE, MARKET

from helpers import REPO  # noqa: E402
CLUSTER = REPO / "cluster"
LAUNCHER = ["aws-spot.yaml", "gcp-spot.yaml", "local-fake.yaml"]
KUBERAY = {"raycluster.yaml": "raycluster-v1.7.0.json", "rayjob-stage1.yaml": "rayjob-v1.7.0.json"}
VARS = {"VLV_GCP_PROJECT": "my-project-123", "VLV_IMAGE": "registry.example/vlv-ray:1", "VLV_BUCKET": "my-bucket"}


def render(path: Path, env: dict) -> subprocess.CompletedProcess:
    """What a user runs: cluster/render fills ${VLV_*} from the environment."""
    return subprocess.run([str(CLUSTER / "render"), str(path)], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], **env}, timeout=60)


def load(path: Path) -> dict:
    r = render(path, VARS)
    assert r.returncode == 0, r.stderr
    assert "${" not in r.stdout
    return yaml.safe_load(r.stdout)


def strict(schema):
    """Kubernetes prunes unknown fields and `kubectl --validate=strict` rejects them: do the same."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_yaml_validates_against_rays_schema(name):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cfg = load(CLUSTER / name)
    jsonschema.validate(cfg, schema)
    text = (CLUSTER / name).read_text()
    for placeholder in ("REPLACE", "YOUR-", "ami-"):
        assert placeholder not in text, placeholder
    prices = catalog.load()
    for node_type, spec in cfg["available_node_types"].items():
        labels = spec["labels"]
        assert prices.lookup(labels[INSTANCE]) is not None, (name, node_type)
        assert labels[MARKET] in ("spot", "on-demand")
        gpu = prices.lookup(labels[INSTANCE]).gpus
        if name != "local-fake.yaml":  # the fake types are 1-CPU stand-ins for the real shapes
            assert spec["resources"].get("GPU", 0) == gpu, node_type
    if name != "local-fake.yaml":
        head = cfg["available_node_types"][cfg["head_node_type"]]
        assert head["labels"][MARKET] == "on-demand" and head["resources"] == {"CPU": 0}
        workers = [s for t, s in cfg["available_node_types"].items() if t != cfg["head_node_type"]]
        assert len({s["labels"][INSTANCE] for s in workers}) >= 3 and all(s["min_workers"] == 0 for s in workers)
        assert all(s["labels"][MARKET] == "spot" for s in workers)
        starts = " ".join(cfg["head_start_ray_commands"])
        assert "--dashboard-host=127.0.0.1" in starts and "RAY_AUTH_MODE=token" in starts
        assert cfg["idle_timeout_minutes"] > 0 and "AWS_SECRET" not in text and "aws_access" not in text.lower()


@pytest.mark.parametrize("name, schema", KUBERAY.items())
def test_kuberay_manifest_validates_against_the_released_crd(name, schema):
    doc = load(CLUSTER / "kuberay" / name)
    crd = strict(json.loads((CLUSTER / "kuberay" / "schema" / schema).read_text()))
    jsonschema.validate(doc, crd)
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert spec["enableInTreeAutoscaling"] and spec["authOptions"]["mode"] == "token"
    assert spec["headGroupSpec"]["serviceType"] == "ClusterIP"
    for group in spec["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        assert group["minReplicas"] == 0 and pod["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert catalog.load().lookup(group["labels"][INSTANCE]) is not None


def test_the_strict_schema_catches_a_misspelt_field():
    doc = load(CLUSTER / "kuberay" / "raycluster.yaml")
    doc["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    crd = strict(json.loads((CLUSTER / "kuberay" / "schema" / "raycluster-v1.7.0.json").read_text()))
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        jsonschema.validate(doc, crd)


def test_a_missing_user_variable_is_one_line_and_exit_2():
    r = render(CLUSTER / "gcp-spot.yaml", {})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == ("cluster/render: error: VLV_GCP_PROJECT: not set (see the 'requires:' line at the "
                                f"top of {CLUSTER / 'gcp-spot.yaml'})")
