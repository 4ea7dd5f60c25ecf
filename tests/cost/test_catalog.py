"""The price catalog: the shipped CSV loads, covers the GPUs users pick, user rows override."""
import subprocess
import sys
from pathlib import Path

import pytest

from vlv_ray.cost import catalog
from vlv_ray.cost.catalog import COLUMNS, CatalogError

from helpers import REPO  # noqa: E402


def test_shipped_catalog_covers_the_gpus_and_heads_of_both_clouds():
    cat = catalog.load()
    have = {(p.cloud, p.gpu_model) for p in cat.rows}
    for gpu in ("H100", "A100-40GB", "A100-80GB", "L4"):
        assert ("aws", gpu) in have or ("gcp", gpu) in have, gpu
    assert ("aws", "L40S") in have and ("aws", "A10G") in have
    assert ("aws", "") in have and ("gcp", "") in have  # CPU heads
    for p in cat.rows:
        assert p.source.startswith("https://") and p.price_date[:4].isdigit()
        # Spot floats by zone: min <= median <= max. (A zone's spot price can reach on-demand; the
        # catalog is the source, so no ordering against on-demand is asserted.)
        if p.spot_usd_per_hour is not None:
            assert p.spot_min <= p.spot_usd_per_hour <= p.spot_max
            assert p.usd_per_hour("spot", "min") <= p.usd_per_hour("spot") <= p.usd_per_hour("spot", "max")


def test_a_user_csv_adds_and_overrides_rows(tmp_path):
    csv = tmp_path / "mine.csv"
    csv.write_text(",".join(COLUMNS) + "\n"
                   "aws,us-east-1,g6e.xlarge,L40S,1,4,32,1.5,0.5,2026-01-02,negotiated,\n"
                   "onprem,lab,dgx-a,H100,8,128,1024,10,,2026-01,internal,\n")
    cat = catalog.load(str(csv))
    assert cat.lookup("g6e.xlarge").on_demand_usd_per_hour == 1.5  # replaced, not duplicated
    assert len([p for p in cat.rows if (p.instance_type, p.region) == ("g6e.xlarge", "us-east-1")]) == 1
    dgx = cat.lookup("dgx-a")
    assert dgx.spot_usd_per_hour is None and dgx.usd_per_hour("spot") == 10.0  # no spot price: on-demand


@pytest.mark.parametrize("row, expected", [
    ("aws,us-east-1,x,,0,4,16,abc,1,2026-01,s,", "row 2: on_demand_usd_per_hour: got 'abc', expected a number"),
    ("aws,us-east-1,x,,0,4,16,1,1,yesterday,s,", "row 2: price_date: got 'yesterday', expected YYYY-MM"),
    ("aws,,x,,0,4,16,1,1,2026-01,s,", "row 2: region: expected a non-empty value"),
])
def test_bad_rows_are_named_by_the_cli(tmp_path, row, expected):
    csv = tmp_path / "bad.csv"
    csv.write_text(",".join(COLUMNS) + "\n" + row + "\n")
    with pytest.raises(CatalogError, match=expected):
        catalog.load(str(csv))
    r = subprocess.run([sys.executable, "-m", "vlv_ray.cli", "cost", "estimate", str(REPO / "jobs/stage1-paper.yaml"),
                        "--throughput", "10", "--prices", str(csv)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and r.stderr.startswith("vlv-ray: error: ") and expected.split(":")[0] in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
