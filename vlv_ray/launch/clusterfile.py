"""A cluster-launcher YAML as `vlv-ray launch` uses it: rendered, validated, its worker pools.

`render` fills each ${VLV_*} from the environment (as cluster/render does; `$RAY_HEAD_IP`
and the like are Ray's and stay). `ClusterSpec` validates the result against the JSON schema
shipped inside the installed `ray` (the one `ray up` checks) and lists the worker pools a
job can run on, in the order launch tries them: the file's spot types first, then, only
when on-demand is allowed, the file's on-demand types and an on-demand copy of each spot
type. `with_pool` is the file with one pool switched on: every other worker type gets
`max_workers: 0`, so the autoscaler launches that pool only (capacity fallback, switch.py).
"""
from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlv_ray.config import ConfigError, CostConfig
from vlv_ray.cost.meter import INSTANCE, MARKET, NODE_TYPE

REGION = "vlv-ray/region"  # the label `cost plan --write-cluster` sets; the live ledger prices by it

VAR = re.compile(r"\$\{(VLV_[A-Z_]*)\}")
LOCAL_PROVIDERS = ("fake_multinode",)  # Ray's "local" provider is on-premises machines: remote


def render(path: str | Path, env: dict[str, str] | None = None) -> str:
    """The file's text with every ${VLV_*} filled from `env` (default: the environment)."""
    env = os.environ if env is None else env
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such cluster file")
    text = p.read_text()
    for var in sorted(set(VAR.findall(text))):
        if not env.get(var):
            raise ConfigError(f"{p}: {var}: not set (see the 'requires:' line at the top of the file)")
    return VAR.sub(lambda m: env[m[1]], text)


def ray_schema() -> dict:
    """The schema `ray up` checks, shipped inside the installed `ray` (found without importing it)."""
    import importlib.util

    origin = importlib.util.find_spec("ray").origin
    return json.loads((Path(origin).parent / "autoscaler" / "ray-schema.json").read_text())


@dataclass(frozen=True)
class Pool:
    """A worker type launch may switch the autoscaler to."""

    node_type: str
    instance_type: str
    market: str
    usd_per_hour: float | None  # None: the instance type is not in the price catalog
    generated: bool = False  # an on-demand copy of a spot type, made by launch

    def describe(self) -> str:
        price = "unpriced" if self.usd_per_hour is None else f"${self.usd_per_hour:.3f}/h"
        return f"{self.node_type} ({self.instance_type} {self.market} {price})"


class ClusterSpec:
    def __init__(self, path: str | Path, env: dict[str, str] | None = None):
        self.path = Path(path)
        try:
            self.config = yaml.safe_load(render(path, env))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise ConfigError(f"{path}:{f' line {mark.line + 1}:' if mark else ''} malformed YAML") from None
        self._validate()

    def _validate(self) -> None:
        import jsonschema

        where = str(self.path)
        if not isinstance(self.config, dict):
            raise ConfigError(f"{where}: expected a Ray cluster-launcher mapping (cluster_name, provider, …)")
        try:
            jsonschema.validate(self.config, ray_schema())
        except jsonschema.ValidationError as e:
            key = ".".join(str(p) for p in e.absolute_path) or "top level"
            raise ConfigError(f"{where}: {key}: {e.message} (Ray's cluster schema)") from None
        types = self.config.get("available_node_types") or {}
        if self.config.get("head_node_type") not in types:
            raise ConfigError(f"{where}: head_node_type: got {self.config.get('head_node_type')!r}, expected one of "
                              f"available_node_types ({', '.join(types) or 'none'})")
        if not self.worker_types:
            raise ConfigError(f"{where}: available_node_types: expected at least one worker type besides the head")

    @property
    def name(self) -> str:
        return self.config["cluster_name"]

    @property
    def provider(self) -> str:
        return self.config["provider"]["type"]

    @property
    def region(self) -> str | None:
        return self.config["provider"].get("region")

    @property
    def remote(self) -> bool:
        return self.provider not in LOCAL_PROVIDERS

    @property
    def head_type(self) -> str:
        return self.config["head_node_type"]

    @property
    def worker_types(self) -> dict[str, dict]:
        return {k: v for k, v in self.config["available_node_types"].items() if k != self.head_type}

    def head_labels(self) -> dict[str, str]:
        return dict(self.config["available_node_types"][self.head_type].get("labels") or {})

    def pools(self, need: dict[str, float], *, allow_on_demand: bool, catalog, cost: CostConfig) -> list[Pool]:
        """The worker types whose resources fit one training worker (`need`), in launch order, each
        priced as the ledger meters it (`cost.model.hourly`: spot at the job's `cost.spot_price`)."""
        from vlv_ray.cost import model

        fits = {t: s for t, s in self.worker_types.items()
                if all((s.get("resources") or {}).get(k, 0) >= v for k, v in need.items())}
        if not fits:
            raise ConfigError(f"{self.path}: available_node_types: no worker type offers {need}, what one training "
                              "worker of the job asks for (scaling.* in the job)")

        def pool(t: str, spec: dict, generated: bool = False) -> Pool:
            labels = spec.get("labels") or {}
            instance, market = labels.get(INSTANCE, t), labels.get(MARKET, "on-demand")
            price = catalog.lookup(instance, labels.get(REGION) or self.region)
            return Pool(t, instance, market, model.hourly(price, market, cost) if price else None, generated)

        spot = [pool(t, s) for t, s in fits.items() if (s.get("labels") or {}).get(MARKET) == "spot"]
        on_demand = [pool(t, s) for t, s in fits.items() if (s.get("labels") or {}).get(MARKET) != "spot"]
        if not spot:
            return on_demand  # the file asks for on-demand workers only: that is the user's choice
        if not allow_on_demand:
            return spot
        return spot + on_demand + [pool(*on_demand_copy(t, fits[t]), generated=True) for t in (p.node_type for p in spot)]

    def with_pool(self, pool: str, *, gcs_address: str | None = None) -> dict[str, Any]:
        """The cluster file with only `pool` launchable (an on-demand copy of a spot type is added)."""
        cfg = copy.deepcopy(self.config)
        types = cfg["available_node_types"]
        for t, spec in list(self.worker_types.items()):  # an on-demand pool made from a spot type
            if (spec.get("labels") or {}).get(MARKET) == "spot" and on_demand_copy(t, spec)[0] == pool:
                types[pool] = on_demand_copy(t, spec)[1]
        if pool not in types:
            raise ConfigError(f"{self.path}: available_node_types: no worker type {pool!r}")
        for t, spec in types.items():
            if t != cfg["head_node_type"] and t != pool:
                spec["max_workers"] = 0
                spec["min_workers"] = 0
        if gcs_address:
            cfg["provider"]["gcs_address"] = gcs_address  # the fake nodes join this head, not :6379
        return cfg


def on_demand_copy(node_type: str, spec: dict) -> tuple[str, dict]:
    """The same shape bought on-demand: the spot request removed from the node config."""
    name = re.sub(r"_spot$", "", node_type) + "_on_demand"
    out = copy.deepcopy(spec)
    nc = out.setdefault("node_config", {})
    nc.pop("InstanceMarketOptions", None)  # AWS
    sched = nc.get("scheduling")
    if isinstance(sched, dict):  # GCP: keep TERMINATE on host maintenance (GPUs need it), drop SPOT
        nc["scheduling"] = {k: v for k, v in sched.items() if k not in ("provisioningModel", "instanceTerminationAction")}
    out["labels"] = {**(out.get("labels") or {}), MARKET: "on-demand", NODE_TYPE: name}
    return name, out


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


def missing_credentials(provider: str, env: dict[str, str] | None = None) -> str | None:
    """What `ray up` would miss for `provider`, said before anything starts; None when found.

    Only what lives on this machine is looked at (environment, profile files): no network
    probe of an instance-metadata service.
    """
    env = os.environ if env is None else env
    if provider == "aws":
        import botocore.session

        session = botocore.session.Session()
        resolver = session.get_component("credential_provider")
        for remote in ("container-role", "iam-role"):  # metadata services: network, and not this machine's user
            try:
                resolver.remove(remote)
            except Exception:  # noqa: BLE001 (a botocore without that provider: nothing to remove)
                pass
        if resolver.load_credentials() is None:
            return ("no AWS credentials: none in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
                    "~/.aws/credentials or ~/.aws/config (`aws configure` writes them)")
        return None
    if provider == "gcp":
        named = env.get("GOOGLE_APPLICATION_CREDENTIALS")
        if named:
            return None if Path(named).is_file() else f"GOOGLE_APPLICATION_CREDENTIALS: {named}: no such file"
        config_dir = Path(env.get("CLOUDSDK_CONFIG") or Path.home() / ".config" / "gcloud")
        if (config_dir / "application_default_credentials.json").is_file():
            return None
        return ("no GCP application-default credentials: GOOGLE_APPLICATION_CREDENTIALS is not set and "
                f"{config_dir / 'application_default_credentials.json'} does not exist "
                "(`gcloud auth application-default login` writes it)")
    return None
