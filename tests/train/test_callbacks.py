"""The callback point: built from the job's `callbacks`, called per step, closed at the end."""
import pytest

from vlv_ray.config import ConfigError
from vlv_ray.train.callbacks import Callbacks, StepEnd

from helpers import JOBS, keys_seen, steps_run, trace


class Recorder:
    """A user's callback: counts steps and remembers being closed."""

    def __init__(self, label: str):
        self.label, self.steps, self.closed = label, [], False

    def on_step_end(self, event: StepEnd) -> None:
        self.steps.append((event.step, event.metrics["loss"]))

    def close(self) -> None:
        self.closed = True


class NoHook:
    pass


def job(tmp_path, *overrides):
    from vlv_ray.config import load_job

    return load_job(JOBS / "tiny.yaml", [f"data.uri={tmp_path}", f"storage_path={tmp_path}", *overrides])


def event(cfg, step, keys):
    return StepEnd(step=step, rank=1, world=2, epoch=0, keys=keys, metrics={"loss": 0.5}, resumed=False, cfg=cfg)


def test_callbacks_from_the_job_run_in_order_and_close(tmp_path):
    cfg = job(tmp_path, trace(tmp_path / "t.txt"))
    cfg.callbacks.append(type(cfg.callbacks[0])(path="test_callbacks:Recorder", args={"label": "mine"}))
    cbs = Callbacks(cfg.callbacks)
    for step in (1, 2):
        cbs.step_end(event(cfg, step, [f"k{step}a", f"k{step}b"]))
    cbs.close()
    recorder = cbs.items[1]
    assert recorder.label == "mine" and recorder.steps == [(1, 0.5), (2, 0.5)] and recorder.closed
    assert steps_run(tmp_path / "t.txt") == {1: [1, 2]}
    assert keys_seen(tmp_path / "t.txt") == ["k1a", "k1b", "k2a", "k2b"]


def test_callbacks_do_not_change_the_config_hash(tmp_path):
    assert job(tmp_path).config_hash() == job(tmp_path, trace(tmp_path / "t.txt")).config_hash()


@pytest.mark.parametrize("path, message", [
    ("no_such_module_here:X", "callbacks[0].path: cannot import 'no_such_module_here:X'"),
    ("test_callbacks:Missing", "callbacks[0].path: cannot import 'test_callbacks:Missing'"),
    ("test_callbacks:NoHook", "without an on_step_end(event) method"),
])
def test_a_callback_that_cannot_be_built_names_itself(tmp_path, path, message):
    cfg = job(tmp_path, f'callbacks=[{{"path": "{path}"}}]')
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        Callbacks(cfg.callbacks)


def test_a_malformed_callback_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"callbacks\[0\]\.path: got 'just_a_module', expected 'package.module:ClassName'"):
        job(tmp_path, 'callbacks=[{"path": "just_a_module"}]')
