"""What a user sees: `vlv-ray train` run from a clean shell (its own local Ray cluster,
while other Ray instances run on the machine, as the session head does here), then
resumed. Our lines carry the news; none of the lines Ray and the libraries used to print
on every run (some at error level, nothing being wrong) is there, and DeepSpeed's CPU
shared-memory op is not compiled. Its stdout is a file, and the step lines are there while
the run lives, not only at exit (a self-started cluster: the case first reported)."""
import re
import shutil
import subprocess
import time
from pathlib import Path

from conftest import user_env  # tests/ is on sys.path: its conftest.py is there

STEP = re.compile(r"^\d\d:\d\d:\d\d step \d+/\d+ \| loss ")
# Seen on every 4-step run before (#14), none of them an error.
NOISE = ("PlacementGroupCleaner", "PreemptionWatcher", "Setting accelerator to CPU", "FutureWarning",
         "Reporting training result", "Token authentication is enabled", "built successfully",
         "Progress bars disabled", "RunConfig(name)", "Started training worker group", "Processing zero checkpoint",
         "Found multiple active Ray instances", "State API may be temporarily unavailable")


def _train(tmp_path, tiny_dataset, ray_head, max_steps: int) -> tuple[subprocess.CompletedProcess, bool]:
    """The run, and whether a step line was in its stdout file while it still trained."""
    # ray_head: a second Ray instance on the machine, which used to kill Ray Train's
    # placement-group cleaner with a traceback.
    assert ray_head.address
    args = ["vlv-ray", "train", "jobs/tiny.yaml", f"data.uri={tiny_dataset}", f"storage_path={tmp_path / 'runs'}",
            f"max_steps={max_steps}", "checkpoint.every_steps=2", "optim.warmup_steps=0"]
    out, err = tmp_path / f"out-{max_steps}.log", tmp_path / f"err-{max_steps}.log"
    # stdout to a file, as with `vlv-ray train … > log &` (Python block-buffers it unless told not to)
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen(args, cwd=_project(tmp_path), env=user_env(tmp_path / "home"), stdout=o, stderr=e)
    live = False
    try:
        deadline = time.time() + 900
        while proc.poll() is None and time.time() < deadline:
            text = out.read_text()
            if re.search(r"step \d+/\d+ \| loss ", text):
                # Before training ends: the driver's cost line at the end of it is printed with a
                # flush, which used to bring every step line with it, seconds before the exit.
                live = proc.poll() is None and "[vlv-ray] cost:" not in text
                break
            time.sleep(0.2)
        rc = proc.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(args, rc, out.read_text(), err.read_text()), live


def _project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    if not proj.exists():
        (proj / "jobs").mkdir(parents=True)
        shutil.copy(Path(__file__).resolve().parents[2] / "jobs" / "tiny.yaml", proj / "jobs")
    return proj


def test_a_run_and_its_resume_print_our_lines_and_no_library_noise(ray_head, tiny_dataset, tmp_path):
    for max_steps, first in ((2, "starting fresh"), (4, "resuming at step 2")):
        r, live = _train(tmp_path, tiny_dataset, ray_head, max_steps)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-4000:]
        assert live, f"no step line in the stdout file while the run trained (all came at its end):\n{out[-4000:]}"
        lines = out.strip().splitlines()
        assert first in lines[0], out
        assert sum(bool(STEP.match(line)) for line in lines) == 2, out  # timestamped step lines
        assert f"done: step {max_steps}" in out
        assert [n for n in NOISE if n in out] == [], out
        # Error-level lines (glog's "E", DeepSpeed's "[ERROR]"), none of which is an error here.
        assert not re.search(r"\d \bE\b \d+ \d+\]|\[ERROR\]", out), out
    # No compiled op: nothing in the default cache either (a fresh HOME).
    cache = tmp_path / "home" / ".cache" / "vlv-ray" / "torch_extensions"
    assert not any(p.suffix == ".so" for p in cache.rglob("*")), list(cache.rglob("*"))


def test_a_run_attached_to_a_head_prints_no_library_noise(ray_head, tiny_dataset, tmp_path):
    """`RAY_ADDRESS=… vlv-ray train` with another Ray instance on the machine: Ray Train's
    preemption watcher logged an error line on every such run, and its placement-group
    cleaner died with a 30-line "Found multiple active Ray instances" traceback."""
    from conftest import start_ray_head

    with start_ray_head():  # the other instance
        r = subprocess.run(
            ["vlv-ray", "train", "jobs/tiny.yaml", f"data.uri={tiny_dataset}", f"storage_path={tmp_path / 'runs'}",
             "name=attached", "max_steps=2", "optim.warmup_steps=0"],
            cwd=_project(tmp_path), env=user_env(tmp_path / "home", RAY_ADDRESS=ray_head.address),
            capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "done: step 2" in out
    assert [n for n in NOISE if n in out] == [], out
    assert not re.search(r"\d \bE\b \d+ \d+\]|\[ERROR\]|Traceback", out), out
