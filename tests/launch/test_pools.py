"""Worker pools and the capacity clock, without a cluster: which pools a job can use and in
what order, the file each pool renders to, and when the launcher switches."""
import pytest
import yaml

from helpers import REPO
from vlv_ray.config import ConfigError, CostConfig
from vlv_ray.cost import catalog
from vlv_ray.launch.clusterfile import ClusterSpec
from vlv_ray.launch.state import LaunchState
from vlv_ray.launch.watch import ClusterWatch, Snapshot

L40S = {"CPU": 1.0, "accelerator_type:L40S": 0.001}


def test_pools_fit_the_job_spot_first_and_on_demand_only_when_allowed(monkeypatch):
    monkeypatch.setenv("VLV_GCP_PROJECT", "p")
    gcp = ClusterSpec(REPO / "cluster" / "gcp-spot.yaml")
    cat = catalog.load()
    l4 = {"CPU": 4.0, "GPU": 1, "accelerator_type:L4": 0.001}
    assert [p.node_type for p in gcp.pools(l4, allow_on_demand=False, catalog=cat, cost=CostConfig())] == [
        "gpu_l4_x1_spot", "gpu_l4_x1_small_spot"]  # the A100 pool cannot serve an L4 job
    both = gcp.pools(l4, allow_on_demand=True, catalog=cat, cost=CostConfig())
    assert [(p.node_type, p.market) for p in both][2:] == [("gpu_l4_x1_on_demand", "on-demand"),
                                                             ("gpu_l4_x1_small_on_demand", "on-demand")]
    assert both[2].usd_per_hour == cat.lookup("g2-standard-8", "us-central1").on_demand_usd_per_hour
    with pytest.raises(ConfigError, match="no worker type offers"):
        gcp.pools({"CPU": 64.0}, allow_on_demand=True, catalog=cat, cost=CostConfig())

    cfg = gcp.with_pool("gpu_l4_x1_on_demand")
    types = cfg["available_node_types"]
    od = types["gpu_l4_x1_on_demand"]
    assert od["max_workers"] == 8 and "provisioningModel" not in od["node_config"]["scheduling"]
    assert od["labels"]["vlv-ray/market"] == "on-demand" and od["node_config"]["machineType"] == "g2-standard-8"
    assert all(s["max_workers"] == 0 for t, s in types.items() if t not in ("head", "gpu_l4_x1_on_demand"))
    assert types["gpu_l4_x1_spot"]["node_config"]["scheduling"]["provisioningModel"] == "SPOT"  # the file's own


def test_pools_are_priced_at_the_jobs_spot_statistic_as_the_ledger_meters_them():
    """A pool's price (its label, a switch's price difference) is the one the ledger will charge:
    spot at `cost.spot_price` (it was always the median)."""
    from vlv_ray.cost import model

    spec, cat = ClusterSpec(REPO / "cluster" / "local-fake.yaml"), catalog.load()
    for stat in ("min", "median", "max"):
        for p in spec.pools(L40S, allow_on_demand=True, catalog=cat, cost=CostConfig(spot_price=stat)):
            price = cat.lookup(p.instance_type, spec.region)
            assert p.usd_per_hour == model.hourly(price, p.market, CostConfig(spot_price=stat)), (stat, p)
    def spot(stat: str) -> list[float]:
        return [p.usd_per_hour for p in spec.pools(L40S, allow_on_demand=False, catalog=cat, cost=CostConfig(spot_price=stat))]

    assert spot("min") < spot("max")  # the catalog's zones differ, so the choice shows


def test_the_capacity_clock_runs_only_while_work_waits_and_no_node_of_the_pool_joined(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = ClusterSpec(REPO / "cluster" / "local-fake.yaml")
    pools = spec.pools(L40S, allow_on_demand=False, catalog=catalog.load(), cost=CostConfig())
    state = LaunchState(name="t", job="j", overrides=[], cluster="c", backend="local", provider="fake_multinode",
                        pool=pools[0].node_type, pool_since=100.0)
    watch = ClusterWatch(state, pools, CostConfig(), 1, capacity_wait_s=30)
    head = {"node_type": "head", "market": "on-demand", "head": True}
    assert watch.next_pool(Snapshot(at=200, alive=[head], demand=False)) is None  # nothing waits: no clock
    assert watch.next_pool(Snapshot(at=210, alive=[head], demand=True)) is None  # the clock starts at 210
    assert watch.next_pool(Snapshot(at=239, alive=[head], demand=True)) is None
    joined = {"node_type": pools[0].node_type, "market": "spot", "head": False}
    assert watch.next_pool(Snapshot(at=241, alive=[head, joined], demand=True)) is None  # a node joined: reset
    assert watch.next_pool(Snapshot(at=250, alive=[head], demand=True)) is None
    nxt = watch.next_pool(Snapshot(at=280, alive=[head], demand=True))
    assert nxt is pools[1]
    line = watch.switched(nxt, 30)
    diff = pools[1].usd_per_hour - pools[0].usd_per_hour
    assert line == (f"capacity: no {pools[0].node_type} node joined in 30 s with work waiting; switching to "
                    f"{pools[1].describe()}, {diff:+.3f} $/h per node")
    assert state.pool == pools[1].node_type and state.switches[0]["from"] == pools[0].node_type
    # Past the last spot pool, without on-demand allowed: back to the first, and it says why.
    assert watch.next_pool(Snapshot(at=state.pool_since + 31, alive=[head], demand=True)) is None
    wrapped = watch.next_pool(Snapshot(at=state.pool_since + 62, alive=[head], demand=True))
    assert wrapped is pools[0] and "every spot pool tried" in watch.switched(wrapped, 31)


def test_a_cluster_file_with_no_worker_type_is_refused(tmp_path):
    doc = yaml.safe_load((REPO / "cluster" / "local-fake.yaml").read_text())
    doc["available_node_types"] = {"ray.head.default": doc["available_node_types"]["ray.head.default"]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="at least one worker type besides the head"):
        ClusterSpec(tmp_path / "c.yaml")


def test_stopping_the_job_of_a_head_that_never_answers_is_bounded(monkeypatch, capsys):
    """A head that accepts connections but never replies (seen loaded): Ray's job client has no
    timeout, so the launcher's stop used to wait as long as the head did before the teardown."""
    import socket
    import threading
    import time
    from types import SimpleNamespace

    from vlv_ray.launch import run

    monkeypatch.setattr(run, "STOP_JOB_WAIT_S", 2.0)
    monkeypatch.setattr(run, "STOP_CALL_TIMEOUT_S", 1.0)
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        state = SimpleNamespace(job_id="raysubmit_x", dashboard=f"http://127.0.0.1:{mute.getsockname()[1]}",
                                job_status=None, save=lambda: None)
        start = time.monotonic()
        stopper = threading.Thread(target=run._stop_job, args=(state,), daemon=True)
        stopper.start()
        stopper.join(30)
        took = time.monotonic() - start
    assert not stopper.is_alive() and took < 10, took
    assert "[launch] could not stop job raysubmit_x: " in capsys.readouterr().out
