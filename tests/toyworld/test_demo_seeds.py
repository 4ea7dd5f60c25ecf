"""The demo's figures over seeds: the spread is computed from every seed's run, and the
summary prints it (the runs themselves are tested to differ by seed in test_golden.py)."""
from __future__ import annotations

import pytest

from vlv_ray.toyworld import demo, evaluate


def _acc(overall: float, shape: float) -> dict[str, float]:
    return {"count": 1.0, "shape": shape, "overall": overall}


def test_spread_is_mean_std_min_max_of_the_runs():
    runs = [_acc(0.90, 0.70), _acc(0.92, 0.74), _acc(0.94, 0.72)]
    s = evaluate.spread(runs)
    assert s["n"] == 3 and s["runs"] == runs
    assert s["mean"]["overall"] == pytest.approx(0.92) and s["mean"]["shape"] == pytest.approx(0.72)
    assert s["std"]["overall"] == pytest.approx(0.02)  # sample std (ddof 1): sqrt((0.02² + 0 + 0.02²) / 2)
    assert (s["min"]["shape"], s["max"]["shape"]) == (0.70, 0.74)
    assert s["std"]["count"] == 0.0 and evaluate.spread(runs[:1])["std"]["overall"] == 0.0


def test_summary_prints_each_figure_with_its_spread(capsys):
    s = evaluate.spread([_acc(0.90, 0.70), _acc(0.94, 0.74)])
    assert demo.pct(s) == "92.0% ± 2.8% [90.0%–94.0%] (count 100% [100%–100%], shape 72% [70%–74%])"
    assert demo.pct(None) == "n/a"


def test_seeds_below_one_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="seeds: got 0, expected at least 1"):
        demo.run(tmp_path / "demo", seeds=0)
    assert not (tmp_path / "demo").exists()


def test_too_few_images_for_a_batch_per_worker_is_one_line_before_any_work(tmp_path):
    """`vlv-ray demo --images 64` gives stage 2 six captioned images for 2 workers × batch 16: it
    ended in a RuntimeError traceback from the data reader minutes in; now one line, exit 2."""
    import os

    from helpers import vlv

    r = vlv(["demo", "--images", "64", "--workdir", str(tmp_path / "demo")], dict(os.environ), tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "vlv-ray: error: --images: got 64, too few: stage 2 trains on 6 of them, expected at least one batch "
        "per worker (2 × data.batch_size 16 = 32)"]
    assert "Traceback" not in r.stderr and not (tmp_path / "demo").exists()
    # --stage1-only needs stage 1's batches alone (64 images, 2 × 16: enough; test_package runs it)
    from vlv_ray.toyworld.point import Stages

    Stages().check_counts(64, None)
    with pytest.raises(ValueError, match="images: got 31, too few: stage 1 trains on 31"):
        Stages().check_counts(31, None)
