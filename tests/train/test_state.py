"""The checkpoint's trainer state round-trips, and every draw's seed is a function of (seed, step, rank)."""
import json

import pytest

from vlv_ray.train.schedule import step_seed
from vlv_ray.train.state import TrainerState


def test_trainer_state_round_trips_through_json_and_keeps_unknown_keys():
    s = TrainerState(step=4, epoch=1, cost_usd=0.25, config_hash="abc", world_size=2,
                     data={"epoch": 1, "consumed": [16, 16]}, rejected_rows=3)
    assert TrainerState.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    newer = {**s.to_dict(), "config": {"seed": 0}}  # a key a newer writer added
    back = TrainerState.from_dict(newer)
    assert back.step == 4 and back.extra == {"config": {"seed": 0}} and back.to_dict() == newer


def test_a_fresh_run_is_the_empty_state():
    assert TrainerState.from_dict({}) == TrainerState()
    assert TrainerState().step == 0 and TrainerState().data is None


@pytest.mark.parametrize("seed", [0, 7])
def test_step_seeds_are_distinct_per_step_rank_and_micro_step(seed):
    dropout = {step_seed(seed, step, rank) for step in range(50) for rank in range(4)}
    noise = {step_seed(seed, step, rank, micro) for step in range(50) for rank in range(4) for micro in range(3)}
    assert len(dropout) == 50 * 4 and len(noise) == 50 * 4 * 3
    assert step_seed(seed, 3, 1) != step_seed(seed + 1, 3, 1)
    assert step_seed(seed, 3, 1, 0) == step_seed(seed, 3, 1, 0)
