"""Transient object-storage faults: a real HTTP proxy (tests/faultproxy.py) in front of the
real local S3 server answers some requests with 503 SlowDown/ServiceUnavailable, cuts a
response body half-way and "restarts" (drops every connection, refuses connects for a
while). Writing, reading and a whole training run go through it and lose nothing."""
import threading
import time
from collections import Counter

from vlv_ray import storage
from vlv_ray.config import load_job
from vlv_ray.data import shards, synthetic
from vlv_ray.train import launch

from faultproxy import FaultProxy  # tests/ is on sys.path: its conftest.py is there
from helpers import JOBS, keys_seen, trace as trace_keys


def test_prepare_and_read_through_5xx_and_a_restart(s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    synthetic.write_images(tmp_path / "img", n=20, seed=5, corrupt=1)
    local = shards.prepare(str(tmp_path / "img"), str(tmp_path / "local"), shard_rows=6, progress=False)
    with FaultProxy(endpoint, error_rate=0.3, seed=1) as proxy:
        uri = f"s3://{bucket}/faulty"
        m = shards.prepare(str(tmp_path / "img"), uri, shard_rows=6, progress=False, endpoint_url=proxy.url)
        writes = proxy.counts["errors"]
        assert writes > 0  # the writer met 503s and retried them
        assert [s["sha256"] for s in m["shards"]] == [s["sha256"] for s in local["shards"]]
        assert m["rejected"] == {"corrupt": 1}

        proxy.cut_next_body(down_s=1.5)  # the first body read is cut, then the server is away
        rows = list(shards.iter_rows(uri, endpoint_url=proxy.url))
        assert proxy.counts["cut_bodies"] == 1 and proxy.counts["restarts"] == 1
        assert proxy.counts["errors"] > writes
        assert rows == list(shards.iter_rows(str(tmp_path / "local")))
        assert shards.inspect(uri, endpoint_url=proxy.url)["integrity"]["ok"]


def test_training_through_faults_serves_every_row_once(ray_cluster, s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    synthetic.write_images(tmp_path / "img", n=64, seed=6, corrupt=1)
    data_uri = f"s3://{bucket}/ds"
    shards.prepare(str(tmp_path / "img"), data_uri, shard_rows=16, row_group_rows=8, progress=False,
                   endpoint_url=endpoint)
    trace = tmp_path / "trace.txt"
    with FaultProxy(endpoint, error_rate=0.1, seed=2) as proxy:
        cfg = load_job(JOBS / "tiny.yaml", [
            f"data.uri={data_uri}", f"storage_path=s3://{bucket}/runs", "name=faulty",
            f"storage.endpoint_url={proxy.url}", "max_steps=8", "checkpoint.every_steps=4", trace_keys(trace)])

        def restart_mid_run():  # once the workers are reading, the server goes away for 1.5 s
            start = proxy.counts["requests"]
            while proxy.counts["requests"] < start + 40 and not stop.is_set():
                time.sleep(0.05)
            if not stop.is_set():
                proxy.cut_next_body(down_s=1.5)

        stop = threading.Event()
        t = threading.Thread(target=restart_mid_run, daemon=True)
        t.start()
        try:
            result = launch.run(cfg)
        finally:
            stop.set()
            t.join()
        counts = dict(proxy.counts)
    assert result.error is None, result.error
    assert result.metrics["step"] == 8 and result.metrics.get("resumed_from") in (None, 0)
    assert counts["errors"] > 0 and counts["restarts"] == 1, counts
    # One epoch, 64 rows, 2 ranks × 4 × 8 steps: every row served exactly once.
    seen = Counter(keys_seen(trace))
    assert len(seen) == 64 and set(seen.values()) == {1}
    assert storage.exists(f"s3://{bucket}/runs/faulty/step-00000008/_COMPLETE", endpoint_url=endpoint)
