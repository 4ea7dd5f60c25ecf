"""The live ledger: a Ray actor that meters the cluster's nodes while the driver's run lives.

The driver starts it around `trainer.fit()` (`track`), pinned to the driver's own node
so a spot reclaim of a GPU node never takes it down. Every `cost.poll_s` it reads the
node table, adds node-seconds × price to the ledger and saves the ledger next to the
checkpoints. Rank 0 asks it for the dollars spent (`LiveCost` in live.py).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Iterator

from vlv_ray import storage
from vlv_ray.config import JobConfig
from vlv_ray.cost import catalog
from vlv_ray.config import CostConfig
from vlv_ray.cost.ledger import Ledger, ledger_uri
from vlv_ray.cost.meter import NodeMeter
from vlv_ray.paths import RunPaths

log = logging.getLogger(__name__)


def actor_name(run: str) -> str:
    return f"vlv-ray-cost:{run}"


class CostTracker:
    """Runs as a Ray actor (see `track`); plain class so it can be tested in-process too."""

    def __init__(self, run_uri: str, run: str, stage: int, cost: dict[str, Any], storage_kw: dict[str, Any]):
        import ray

        self.run_uri, self.kw, self.cost = run_uri, storage_kw, CostConfig(**cost)
        self.ledger = Ledger.load(run_uri, run, **storage_kw)
        if self.ledger.sessions and self.ledger.sessions[-1]["stop"] is None:  # its driver died: it metered
            self.ledger.sessions[-1]["stop"] = self.ledger.updated_at  # until its last save
        self.ledger.sessions.append({"start": time.time(), "stop": None})
        self.meter = NodeMeter(self.ledger, stage, catalog.load(self.cost.prices_csv), self.cost,
                               storage=storage.on_object_store(run_uri))  # a local disk bills nothing
        self.lock, self.done = threading.Lock(), threading.Event()
        self._nodes = ray.nodes
        self._poll()
        self.thread = threading.Thread(target=self._run, name="vlv-cost", daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        nodes = self._nodes()
        with self.lock:
            self.meter.observe(nodes, time.time())
            snapshot = Ledger.from_json(self.ledger.to_json())
        try:
            snapshot.save(self.run_uri, **self.kw)
        except Exception as e:  # a storage hiccup must not stop the metering; the next poll retries
            log.warning("cost: could not save the ledger: %s", storage.redact(str(e)))

    def _run(self) -> None:
        while not self.done.wait(self.cost.poll_s):
            try:
                self._poll()
            except Exception as e:
                log.warning("cost: poll failed: %s", e)

    def spent(self) -> float:
        with self.lock:
            return self.ledger.total_usd

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return self.ledger.to_json()

    def stop(self) -> dict[str, Any]:
        self.done.set()
        self.thread.join(timeout=30)
        with self.lock:
            self.ledger.sessions[-1]["stop"] = time.time()
        self._poll()
        return self.snapshot()


@contextlib.contextmanager
def track(cfg: JobConfig, paths: RunPaths) -> Iterator[Any]:
    """Meter the cluster for the duration of the block; print the run's total at the end."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    run_uri = paths.run
    here = ray.get_runtime_context().get_node_id()
    _pin_ray_data_stats_actor()
    actor = ray.remote(CostTracker).options(
        name=actor_name(cfg.name), num_cpus=0, max_concurrency=4, max_restarts=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
    ).remote(run_uri, cfg.name, cfg.stage, vars(cfg.cost), paths.storage)
    ray.get(actor.spent.remote())  # constructed: the ledger is loaded and the first poll taken
    try:
        yield actor
    finally:
        try:
            final = ray.get(actor.stop.remote(), timeout=60)
            print(f"[vlv-ray] cost: ${final['total_usd']:.4f} so far for {cfg.name} "
                  f"(vlv-ray cost report {run_uri}); ledger: {ledger_uri(run_uri)}", flush=True)
        finally:
            ray.kill(actor)


def _pin_ray_data_stats_actor() -> None:
    """Create Ray Data's stats actor here, on the driver's node, before any worker does.

    It is a detached actor pinned to the node of whoever first uses Ray Data. Created by a
    training worker, it sits on a GPU node and keeps it from ever going idle, so the
    autoscaler never removes that node and it is billed until someone notices (seen with
    the fake multi-node cluster: tests/cluster/test_autoscaling.py).
    """
    try:
        from ray.data._internal.stats import get_or_create_stats_actor
    except ImportError:  # a Ray without it: nothing to pin
        return
    get_or_create_stats_actor()
