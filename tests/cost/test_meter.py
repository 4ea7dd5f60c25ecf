"""Node-seconds and prices from node-table snapshots shaped like `ray.nodes()`."""
from vlv_ray.config import CostConfig
from vlv_ray.cost import catalog
from vlv_ray.cost.ledger import Ledger, format_report
from vlv_ray.cost.meter import NodeMeter


def node(node_id, alive=True, head=False, **labels):
    resources = {"CPU": 1.0, **({"node:__internal_head__": 1.0} if head else {})}
    return {"NodeID": node_id, "Alive": alive, "Resources": resources, "Labels": labels}


def test_nodes_are_priced_from_labels_and_charged_while_up_idle_or_not():
    cost = CostConfig(local_node_usd_per_hour=7.2, market="on-demand")
    led = Ledger(run="r")
    m = NodeMeter(led, 1, catalog.load(), cost)
    head = node("h", head=True)  # no labels: the local price
    gpu = node("g", **{"vlv-ray/instance-type": "g6e.xlarge", "vlv-ray/market": "spot", "vlv-ray/node-type": "gpu"})
    odd = node("x", **{"vlv-ray/instance-type": "no-such-type", "ray.io/market-type": "ON_DEMAND"})
    m.observe([head], 1000.0)
    m.observe([head, gpu], 1010.0)  # gpu appeared within these 10 s: half of them
    m.observe([head, gpu, odd], 1020.0)
    m.observe([head, {**gpu, "Alive": False}, odd], 1030.0)  # gpu died within these 10 s: half
    m.observe([head, odd], 1040.0)
    e = {k.split("/")[0]: v for k, v in led.entries.items()}
    assert e["h"].seconds == 40.0 and e["h"].instance_type == "local" and e["h"].usd_per_hour == 7.2
    assert e["g"].seconds == 5 + 10 + 5 and e["g"].market == "spot" and e["g"].node_type == "gpu"
    assert e["g"].usd_per_hour == catalog.load().lookup("g6e.xlarge").spot_usd_per_hour
    assert e["x"].priced is False and e["x"].usd_per_hour == 0 and e["x"].market == "on-demand"
    assert abs(led.total_usd - (40 * 7.2 + 20 * e["g"].usd_per_hour) / 3600) < 1e-12
    text = format_report(led)
    assert "not in the catalog" in text and "g6e.xlarge" in text and f"{led.total_usd:.4f}" in text


def test_the_ledger_round_trips_through_storage_and_keeps_counting(tmp_path):
    led = Ledger(run="r")
    m = NodeMeter(led, 2, catalog.load(), CostConfig(local_node_usd_per_hour=3600.0))
    m.observe([node("a")], 0.0)
    m.observe([node("a")], 3.0)
    led.save(str(tmp_path))
    again = Ledger.load(str(tmp_path), "r")
    NodeMeter(again, 2, catalog.load(), CostConfig(local_node_usd_per_hour=3600.0)).observe([node("a")], 100.0)
    assert again.total_usd == 3.0 and again.entries["a/2"].stage == 2  # a new driver starts at 0 s, then adds
    assert Ledger.load(str(tmp_path / "fresh"), "new").entries == {}


def test_a_run_on_object_storage_meters_its_storage_as_the_quote_prices_it():
    """`cost.storage_gb` × $/GB-month over a 730-hour month, for as long as the run is metered; a
    run on local disk (storage=False) bills none. The quote adds the same $/h over its wall time."""
    from vlv_ray.cost import model

    cost = CostConfig(local_node_usd_per_hour=0.0, storage_gb=2000.0, storage_usd_per_gb_month=0.0365)
    for on_store in (True, False):
        led = Ledger(run="r")
        m = NodeMeter(led, 1, catalog.load(), cost, storage=on_store)
        m.observe([node("h", head=True)], 0.0)
        m.observe([node("h", head=True)], 1800.0)
        m.observe([], 3600.0)  # the metering goes on while no node is up: the bucket still bills
        if on_store:
            e = led.entries["storage/1"]
            assert e.seconds == 3600.0 and e.usd_per_hour == model.storage_hourly(cost) == 2000 * 0.0365 / 730
            assert led.total_usd == e.usd_per_hour and "object storage" in format_report(led)
        else:
            assert "storage/1" not in led.entries and led.total_usd == 0.0


def test_metered_seconds_sum_every_drivers_session():
    """A closed session counts start to stop; one still open (its driver died, or runs) until the
    ledger's last save."""
    led = Ledger(run="r", updated_at=1000.0, sessions=[{"start": 10.0, "stop": 40.0}, {"start": 900.0, "stop": None}])
    assert led.metered_s == 30.0 + 100.0
    assert Ledger(run="r").metered_s == 0.0
