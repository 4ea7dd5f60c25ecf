"""The learning-rate schedule: warm-up, then a single decay over the whole run."""
import math

from vlv_ray.config import OptimConfig
from vlv_ray.train.schedule import lr_at


def test_warmup_then_cosine_decays_once_to_floor():
    opt = OptimConfig(lr=1.0, warmup_steps=100, min_lr_ratio=0.1, schedule="cosine")
    total = 200_000
    lrs = [lr_at(s, total, opt) for s in range(0, total + 1, 50)]
    assert lr_at(0, total, opt) == 1.0 / 100 and lr_at(99, total, opt) == 1.0
    decay = [lr_at(s, total, opt) for s in range(100, total + 1, 97)]
    # monotone non-increasing after warm-up: no restart anywhere in 200K steps
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert math.isclose(lr_at(total, total, opt), 0.1, rel_tol=1e-9)
    mid = 100 + (total - 100) // 2
    assert math.isclose(lr_at(mid, total, opt), 0.1 + 0.9 * 0.5, rel_tol=1e-3)
    assert min(lrs) >= 0.0099


def test_linear_and_constant():
    lin = OptimConfig(lr=2.0, warmup_steps=0, min_lr_ratio=0.0, schedule="linear")
    assert lr_at(0, 10, lin) == 2.0 and lr_at(5, 10, lin) == 1.0 and lr_at(10, 10, lin) == 0.0
    const = OptimConfig(lr=3.0, warmup_steps=0, schedule="constant")
    assert {lr_at(s, 10, const) for s in range(11)} == {3.0}
