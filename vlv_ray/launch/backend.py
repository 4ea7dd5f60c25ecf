"""Where a launched cluster runs: the cloud (Ray's cluster launcher) or this machine (the fake provider).

Both backends do the same five things for `launch` (run.py), on a `LaunchState` they keep up
to date: `up` a rendered cluster file, say whether it `is_up`, `switch` the autoscaler to
another rendered file (capacity fallback), and `down`. `commands()` lists what `up`/`switch`/
`down` run, for `--dry-run`.

- `CloudBackend`: `ray up`, `ray get-head-ip`, `ray exec` (the head's auth token),
  `ray dashboard` (an SSH tunnel to the head's dashboard, which listens on 127.0.0.1 only),
  `ray up --no-restart` to hand the head's autoscaler a new file, `ray down`.
- `LocalBackend`: `RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=FILE` on free
  ports with its own agent ports (a second head on one machine must not take the job agent's
  fixed port), in a session of its own, so Ctrl-C in the terminal reaches the launcher only;
  the autoscaler re-reads FILE at every update, so a switch rewrites it. Stopped by PID:
  every process of the head's session and below it, nothing else on the machine.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Protocol

from vlv_ray.config import ConfigError
from vlv_ray.launch import clusterfile
from vlv_ray.launch.state import LaunchState


class ClusterFailed(RuntimeError):
    """The cluster could not be started, reached or torn down; the message says where to look."""


def ray_cli() -> str:
    """The `ray` beside this interpreter (the project's venv), so client and cluster match."""
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else "ray"


def ensure_local_token() -> None:
    """The cluster files mount ~/.ray/auth_token onto the head; the local head reads it too."""
    from ray._raylet import AuthenticationTokenLoader

    if AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        return
    subprocess.run([ray_cli(), "get-auth-token", "--generate"], check=True, capture_output=True, timeout=120)
    AuthenticationTokenLoader.instance().reset_cache()


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_port_flags() -> list[str]:
    """`ray start` flags giving a head its own agent ports: Ray's defaults are fixed (the job
    agent's 52365), so a second head on one machine would find them taken."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
            f"--ray-client-server-port={free_port()}"]


class ClusterBackend(Protocol):
    state: LaunchState

    def commands(self) -> list[str]: ...
    def up(self, cfg: dict) -> None: ...
    def is_up(self) -> bool: ...
    def switch(self, cfg: dict) -> None: ...
    def down(self) -> None: ...


def for_state(state: LaunchState) -> ClusterBackend:
    return LocalBackend(state) if state.backend == "local" else CloudBackend(state)


# ---------------------------------------------------------------------------- cloud


class CloudBackend:
    def __init__(self, state: LaunchState):
        self.state = state
        self.file = state.sibling(".yaml")

    def _ray(self, *args: str) -> list[str]:
        return [ray_cli(), *args]

    def commands(self) -> list[str]:
        f = shlex.quote(str(self.file))
        return [
            "ray get-auth-token --generate        # only when ~/.ray/auth_token is missing (the head mounts it)",
            f"ray up -y {f}",
            f"ray get-head-ip {f}",
            f"ray exec {f} 'ray get-auth-token'   # the head's token, compared with ours",
            f"ray dashboard --port PORT {f}       # SSH tunnel: the dashboard listens on the head's 127.0.0.1",
            f"ray up -y --no-restart {f}          # on a capacity switch: the file with the next pool on",
            f"ray down -y {f}                     # however the job ends, unless --keep",
        ]

    def _run(self, *args: str, log: str, timeout: float) -> str:
        with self.state.sibling(log).open("a") as f:
            r = subprocess.run(self._ray(*args), stdout=subprocess.PIPE, stderr=f, text=True, timeout=timeout)
        if r.returncode != 0:
            raise ClusterFailed(f"ray {args[0]} failed (exit {r.returncode}); its log: {self.state.sibling(log)}")
        return r.stdout

    def up(self, cfg: dict) -> None:
        ensure_local_token()
        write_atomic(self.file, clusterfile.dump(cfg))
        print(f"[launch] ray up {self.file} (log: {self.state.sibling('.up.log')})", flush=True)
        self._run("up", "-y", str(self.file), log=".up.log", timeout=3600)
        ip = self._run("get-head-ip", str(self.file), log=".up.log", timeout=300).strip().splitlines()[-1]
        port = free_port()
        tunnel = subprocess.Popen(self._ray("dashboard", "--port", str(port), str(self.file)),
                                  stdout=subprocess.DEVNULL, stderr=self.state.sibling(".tunnel.log").open("a"),
                                  start_new_session=True)
        self.state.head = {"ip": ip, "tunnel_pid": tunnel.pid}
        self.state.dashboard = f"http://127.0.0.1:{port}"
        theirs = self._run("exec", str(self.file), "ray get-auth-token", log=".up.log", timeout=300)
        from ray._raylet import AuthenticationTokenLoader

        ours = AuthenticationTokenLoader.instance().get_raw_token(ignore_auth_mode=True)
        if ours not in theirs:
            raise ClusterFailed(f"the head's auth token differs from ~/.ray/auth_token (it is mounted from there): "
                               f"`ray down -y {self.file}` and launch again")

    def is_up(self) -> bool:
        return self.state.status not in ("down",) and self.file.is_file()

    def switch(self, cfg: dict) -> None:
        write_atomic(self.file, clusterfile.dump(cfg))
        self._run("up", "-y", "--no-restart", str(self.file), log=".up.log", timeout=1800)

    def down(self) -> None:
        pid = self.state.head.get("tunnel_pid")
        if pid:
            _kill(pid, signal.SIGTERM)
        self._run("down", "-y", str(self.file), log=".down.log", timeout=1800)


# ---------------------------------------------------------------------------- local (fake provider)


class LocalBackend:
    def __init__(self, state: LaunchState):
        self.state = state
        self.file = state.sibling(".yaml")

    def commands(self) -> list[str]:
        return [f"RAY_FAKE_CLUSTER=1 ray start --head --block --autoscaling-config={self.file} (free ports, own "
                "agent ports, its own session)", f"rewrite {self.file} on a capacity switch",
                "stop the head's processes by PID"]

    def up(self, cfg: dict) -> None:
        import ray._private.services as services

        ensure_local_token()
        tmp = Path(tempfile.mkdtemp(prefix="vlvlaunch-", dir="/tmp"))  # short: unix socket paths are capped
        ip, port, dash = services.get_node_ip_address(), free_port(), free_port()
        cfg = {**cfg, "provider": {**cfg["provider"], "gcs_address": f"{ip}:{port}"}}
        write_atomic(self.file, clusterfile.dump(cfg))
        head = cfg["available_node_types"][cfg["head_node_type"]]
        labels = ",".join(f"{k}={v}" for k, v in (head.get("labels") or {}).items())
        cpus = int((head.get("resources") or {}).get("CPU", 1))
        env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "RAY_AUTH_MODE": "token",
               "RAY_ADDRESS": f"{ip}:{port}",  # Ray Train's helper actors look for "the" cluster
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.setdefault("AUTOSCALER_UPDATE_INTERVAL_S", "2")  # a laptop: react to a switch in seconds
        log = tmp / "head.log"
        proc = subprocess.Popen(
            [ray_cli(), "start", "--head", "--block", f"--port={port}", f"--node-ip-address={ip}",
             f"--num-cpus={cpus}", *([f"--labels={labels}"] if labels else []), f"--temp-dir={tmp}",
             f"--autoscaling-config={self.file}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}", "--disable-usage-stats", *own_port_flags()],
            stdout=log.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True, cwd=tmp)
        self.state.head = {"pid": proc.pid, "temp_dir": str(tmp), "gcs": f"{ip}:{port}", "log": str(log)}
        self.state.dashboard = f"http://127.0.0.1:{dash}"
        self.state.save()  # from here on a crash leaves a head that --down can find
        for p in (port, dash):
            _wait_port(p, proc, log)

    def is_up(self) -> bool:
        pid, tmp = self.state.head.get("pid"), self.state.head.get("temp_dir")
        if not pid or not tmp:
            return False
        try:
            return tmp.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    def switch(self, cfg: dict) -> None:
        cfg = {**cfg, "provider": {**cfg["provider"], "gcs_address": self.state.head["gcs"]}}
        write_atomic(self.file, clusterfile.dump(cfg))

    def down(self) -> None:
        pid = self.state.head.get("pid")
        if pid and self.is_up():
            procs = [pid, *_processes_of(pid)]
            _kill(pid, signal.SIGTERM)  # `ray start --block` stops its cluster on SIGTERM
            deadline = time.time() + 20
            while time.time() < deadline and any(_alive(p) for p in procs):
                _reap(pid)
                time.sleep(0.5)
            for p in [*procs, *_processes_of(pid)]:
                _kill(p, signal.SIGKILL)
            deadline = time.time() + 10
            while time.time() < deadline and _alive(pid):
                _reap(pid)
                time.sleep(0.2)
        if self.state.head.get("temp_dir"):
            shutil.rmtree(self.state.head["temp_dir"], ignore_errors=True)


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 180.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ClusterFailed(f"the local head exited while starting; its log: {log}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise ClusterFailed(f"the local head did not open port {port} in {timeout_s:.0f} s; its log: {log}")


def _processes_of(pid: int) -> list[int]:
    """The head's session (it was started in a new one) and every descendant of the head."""
    parent, session = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)], session[int(stat.parent.name)] = int(fields[1]), int(fields[3])
    out = {p for p, s in session.items() if s == pid and p != pid}
    todo = [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in out]
        out.update(kids)
        todo += kids
    return sorted(out)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(pid: int) -> None:
    """Collect the head's exit status when this process started it (else it lingers as a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def check_up_ok(state: LaunchState) -> None:
    """A launch name whose cluster is still up belongs to that launch: re-attach or take it down."""
    if state.status != "down" and for_state(state).is_up():
        raise ConfigError(f"launch {state.name}: already launched ({Path(state.job).name} on "
                          f"{Path(state.cluster).name}) and still up; re-run that command to re-attach, "
                          f"or `vlv-ray launch --down {state.name}`")
