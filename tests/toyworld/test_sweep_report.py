"""The sweep table's FID in miniature and its rank correlation with accuracy (no Ray)."""
import csv

import pytest

from vlv_ray.toyworld import sweep_report


def _metrics(acc: float, fid: float, recon: float) -> dict:
    per = {a: acc for a in sweep_report.ATTRIBUTES}
    return {"caption_accuracy": {**per, "overall": acc}, "reconstruction_accuracy": {"overall": recon},
            "reconstruction_fid": {"value": fid, "protocol": {}}, "stage1_final_loss": 0.1,
            "stage2_final_loss": 0.2, "seconds": {"total_s": 1.0}, "cost": {"worker_hours": 0.1, "usd": 0.01}}


def _rows(points):
    return [sweep_report.row({"images": n, "queries": 4, "paired_images": n // 10}, _metrics(*m), None)
            for n, m in points]


def test_rank_correlation_is_minus_one_when_fid_falls_as_accuracy_rises(tmp_path):
    rows = _rows([(1000, (0.5, 9.0, 0.4)), (3000, (0.7, 4.0, 0.6)), (6000, (0.8, 2.5, 0.65))])
    rho = sweep_report.rank_correlations(rows)
    assert rho["caption"] == pytest.approx(-1.0, abs=1e-4) and rho["reconstruction"] == pytest.approx(-1.0, abs=1e-4)
    assert rho["points"] == 3
    paths = sweep_report.write(rows, tmp_path, "t")
    md = paths["md"].read_text()
    assert "| recon accuracy | recon FID |" in md and "| 4.000 |" in md
    assert "Spearman rank correlation across points of reconstruction FID with caption accuracy -1.00" in md
    with paths["csv"].open() as f:  # a CSV read back (strings) gives the same correlation
        again = list(csv.DictReader(f))
    assert sweep_report.rank_correlations(again) == rho


def test_rank_correlation_needs_three_finished_points():
    rows = _rows([(1000, (0.5, 9.0, 0.4)), (3000, (0.7, 4.0, 0.6))])
    rows.append(sweep_report.row({"images": 9000, "queries": 4, "paired_images": 900}, None, "boom"))
    assert sweep_report.rank_correlations(rows) is None
    assert "Spearman" not in sweep_report.markdown(rows)
    mixed = _rows([(1000, (0.5, 2.0, 0.4)), (3000, (0.7, 9.0, 0.6)), (6000, (0.8, 4.0, 0.65))])
    assert sweep_report.rank_correlations(mixed)["caption"] == pytest.approx(0.5, abs=1e-4)
