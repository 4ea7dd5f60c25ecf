"""Real object storage: prepare → inspect → train → resume, all through s3:// on a local server."""
from pathlib import Path

import pyarrow.fs as pafs

from vlv_ray import storage
from vlv_ray.config import load_job
from vlv_ray.data import shards, synthetic
from vlv_ray.train import launch

from helpers import JOBS


def test_prepare_train_and_resume_on_s3(ray_cluster, s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    synthetic.write_images(tmp_path / "img", n=64, seed=2, corrupt=1)
    data_uri = f"s3://{bucket}/datasets/tiny"
    m = shards.prepare(str(tmp_path / "img"), data_uri, shard_rows=16, progress=False, endpoint_url=endpoint)
    assert m["rows"] == 64 and m["rejected"] == {"corrupt": 1}
    report = shards.inspect(data_uri, endpoint_url=endpoint)
    assert report["integrity"]["ok"] and len(report["shards"]) == 4

    def job(steps):
        return load_job(JOBS / "tiny.yaml", [
            f"data.uri={data_uri}", f"storage_path=s3://{bucket}/runs", "name=on-s3",
            f"storage.endpoint_url={endpoint}", f"max_steps={steps}", "checkpoint.every_steps=2"])

    first = launch.run(job(4))
    assert first.error is None and first.metrics["step"] == 4
    fs, root = storage.resolve(f"s3://{bucket}/runs/on-s3", endpoint_url=endpoint)
    names = {Path(i.path).name for i in fs.get_file_info(pafs.FileSelector(root))}
    assert {"step-00000002", "step-00000004", "export"} <= names
    assert storage.exists(f"s3://{bucket}/runs/on-s3/step-00000004/_COMPLETE", endpoint_url=endpoint)
    assert storage.exists(f"s3://{bucket}/runs/on-s3/step-00000004/engine/zero_pp_rank_1_mp_rank_00_optim_states.pt",
                          endpoint_url=endpoint)

    second = launch.run(job(6))
    assert second.error is None
    assert second.metrics["resumed_from"] == 4 and second.metrics["step"] == 6
    # The run's ledger bills the bucket for as long as the runs were metered (a local run's does not).
    led = storage.read_json(f"s3://{bucket}/runs/on-s3/cost/ledger.json", endpoint_url=endpoint)
    store = led["entries"]["storage/1"]
    metered = sum(s["stop"] - s["start"] for s in led["sessions"])
    assert store["instance_type"] == "object storage" and 0.5 * metered < store["seconds"] <= metered + 1e-6

