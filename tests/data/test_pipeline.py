"""The Ray Data read path drops rows it cannot decode, records them, and never trains on zeros."""
import io
import json

import numpy as np
from PIL import Image

from vlv_ray.config import load_job
from vlv_ray.data import shards
from vlv_ray.data.pipeline import count_rejects, decode_images
from vlv_ray.train import launch

from helpers import JOBS


def png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buf, "PNG")
    return buf.getvalue()


def test_decode_images_records_rejects_by_key(tmp_path):
    batch = {"key": np.array(["ok", "bad"], dtype=object), "image": np.array([png((1, 2, 3)), b"xx"], dtype=object)}
    out = decode_images(batch, 16, rejects_uri=str(tmp_path / "rejects"))
    assert list(out["key"]) == ["ok"]
    lines = [json.loads(l) for p in (tmp_path / "rejects").glob("part-*.jsonl") for l in p.read_text().splitlines()]
    assert lines == [{"key": "bad", "reason": "corrupt"}]
    assert count_rejects(str(tmp_path / "rejects")) == {"corrupt": 1}
    decode_images(batch, 16, rejects_uri=str(tmp_path / "rejects"))  # a second epoch sees it again
    assert count_rejects(str(tmp_path / "rejects")) == {"corrupt": 1}  # still one row


def test_training_drops_a_row_that_passed_prepare_but_cannot_be_decoded(ray_cluster, tmp_path, capfd):
    # A shard written behind prepare's back: one row's bytes are not an image.
    rows = [{"key": f"k{i:03d}", "image": png((i * 3 % 256, 90, 200)), "width": 40, "height": 40,
             "source": "test", "caption": None} for i in range(63)]
    rows.insert(17, {"key": "broken", "image": b"\xff\xd8 not a jpeg", "width": 40, "height": 40,
                     "source": "test", "caption": None})
    data = tmp_path / "data"
    rec = shards._write_shard(str(data), 0, rows, {})
    (data / "manifest.json").write_text(json.dumps({
        "schema_version": shards.SCHEMA_VERSION, "shards": [rec], "rows": 64, "bytes": rec["bytes"],
        "filters": {}, "rejected": {}}))
    cfg = load_job(JOBS / "tiny.yaml", [f"data.uri={data}", f"storage_path={tmp_path / 'runs'}", "name=rej",
                                        "max_steps=7", "checkpoint.every_steps=7"])
    result = launch.run(cfg)
    assert result.error is None and result.metrics["step"] == 7
    assert count_rejects(str(tmp_path / "runs" / "rej" / "rejects")) == {"corrupt": 1}
    out = capfd.readouterr().out
    assert "dropped 1 rows during training (corrupt=1)" in out
    # The row falls in rank 0's first batch of epoch 0 (seed 0): every log line from step 1 on counts it.
    assert result.metrics["rejected_rows"] == 1 and "step 1/7 |" in out and "| rejected 1 |" in out
