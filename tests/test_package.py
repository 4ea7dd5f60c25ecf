"""The package as a user installs it: a wheel, installed non-editable into a fresh venv, run
from a directory outside the checkout with no PYTHONPATH.

The venv borrows the already-installed dependencies (torch, ray, ...) through a .pth line,
so nothing is downloaded; vlv_ray itself and the `vlv-ray` script come only from the wheel.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers import JOBS, REPO

pytestmark = pytest.mark.integration  # builds a wheel and a venv; the demo starts Ray and DeepSpeed


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pkg")
    # Build from a copy: the build writes build/ and *.egg-info next to the sources.
    src = root / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".cache", "build", "*.egg-info", "__pycache__", "vlv-demo", "wandb"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist", src])
    (wheel,) = (root / "dist").glob("vlv_ray-*.whl")
    env_dir = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", env_dir])
    site = Path(run([env_dir / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "_borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", env_dir / "bin" / "python", "install", "--no-deps", "--no-index", wheel])
    return env_dir


def run(cmd, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_the_installed_command_works_outside_the_checkout(venv, tmp_path):
    where = run([venv / "bin" / "python", "-c", "import vlv_ray.cli; print(vlv_ray.cli.__file__)"], cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv) and not Path(where.stdout.strip()).is_relative_to(REPO)
    assert "demo" in run([venv / "bin" / "vlv-ray", "--help"], cwd=tmp_path).stdout
    shutil.copy(JOBS / "tiny.yaml", tmp_path / "my-job.yaml")
    r = run([venv / "bin" / "vlv-ray", "config", "check", "my-job.yaml"], cwd=tmp_path)
    assert "my-job.yaml" in r.stdout + r.stderr


def test_demo_stage1_runs_from_the_wheel(venv, tmp_path):
    r = run([venv / "bin" / "vlv-ray", "demo", "--stage1-only", "--images", "64", "max_steps=2",
             "optim.warmup_steps=1"], cwd=tmp_path, timeout=900)
    assert "stage 1 done" in r.stdout + r.stderr
    assert (tmp_path / "vlv-demo" / "runs").is_dir() and list((tmp_path / "vlv-demo" / "runs").glob("*/export/stage1/vlv.json"))
