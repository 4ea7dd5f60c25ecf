"""Stopping a run at a step boundary, with a checkpoint of that step on every rank.

Two causes, one path through the loop (`stop_reason`, agreed by all ranks each step):
- "preempted": a worker got SIGTERM (a spot notice). Every rank checkpoints, then
  `Preempted` is raised so Ray Train restarts the group and resumes from that checkpoint.
- "stopped": the driver got SIGTERM or SIGINT (`ray job stop`, Ctrl-C, a scheduler).
  `DriverStop` on the driver puts a flag in the cluster's key-value store (Ray's GCS);
  rank 0 polls it each step. Every rank checkpoints and the loop ends; the driver prints
  where it stopped and how to resume, and exits 128 + the signal's number (130 for SIGINT,
  143 for SIGTERM), as a shell reports a process a signal ended.

Worker SIGTERM:

Ray Train V2 runs the training function in a thread of the worker actor, and Python only
lets the main thread install signal handlers. So the worker asks its own actor (whose
methods run on the main thread) to install the handler through `RayTrainWorker.execute`.
The handler only sets a flag; the loop checks it once per step, agrees on it across all
ranks (one all-reduce), saves a checkpoint and raises `Preempted`, so Ray Train's
FailureConfig restarts the group and it resumes from that checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import uuid

import torch

_requested = threading.Event()
# Ray's GCS key-value store: every node of the cluster reads it; one small key per driver run.
KV_NAMESPACE = "vlv_ray_stop"
# Set by Ray's job supervisor in the environment of a job's entrypoint (and nowhere else).
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
# What one step's collective decision can be; the higher code wins on a tie.
REASONS = {0: None, 1: "preempted", 2: "stopped"}


class Preempted(RuntimeError):
    """Raised after the SIGTERM checkpoint so Ray Train restarts and resumes the run."""


def _on_sigterm(signum, frame) -> None:
    _requested.set()


def _install() -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    return os.getpid()


def install() -> None:
    """Install the SIGTERM flag handler in this Ray Train worker process."""
    import ray

    _requested.clear()
    if threading.current_thread() is threading.main_thread():
        _install()
        return
    actor = ray.get_runtime_context().current_actor
    ray.get(actor.execute.remote(_install))


def stop_reason(world: int, rank: int = 0, stop_key: str | None = None) -> str | None:
    """None, "preempted" (any rank got SIGTERM) or "stopped" (the driver asked), the same on
    every rank. Collective: call on all ranks."""
    code = 1 if _requested.is_set() else 0
    if rank == 0 and stop_key and _driver_asked(stop_key):
        code = 2
    flag = torch.tensor([float(code)])
    if world > 1:
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return REASONS[int(flag.item())]


def _driver_asked(key: str) -> bool:
    from ray.experimental import internal_kv

    return internal_kv._internal_kv_initialized() and internal_kv._internal_kv_exists(key, namespace=KV_NAMESPACE)


class Interrupted(KeyboardInterrupt):
    """A signal ended the driver before (or without) a checkpoint; `when` says at what point,
    `exit_code` is 128 + the signal's number."""

    def __init__(self, signum: int, when: str = ""):
        super().__init__(signal.Signals(signum).name)
        self.signame, self.when = signal.Signals(signum).name, when
        self.exit_code = 128 + signum


class DriverStop:
    """On the driver, for the whole run: while the workers run (`armed`), the first SIGTERM/
    SIGINT asks them to checkpoint and end (see the module doc) and a second one aborts at once
    (`Interrupted`). Unarmed (before the workers start, after they end) a signal ends the run at
    once: there is nothing to save, and the caller's `finally` releases what it holds. Inside
    `deferred()` it waits for the block to finish first."""

    def __init__(self, say=print):
        self.key = f"stop-{uuid.uuid4().hex}"
        self.signum: int | None = None
        self.armed = False
        self.stage = "before the workers started (nothing to checkpoint)"  # said when an unarmed signal ends the run
        self.say = say
        self._asked = threading.Event()
        self._previous: dict[int, object] = {}
        self._deferring = False
        self._deferred: int | None = None

    def __enter__(self) -> "DriverStop":
        self.claim()
        # The GCS call runs on a thread: a signal handler may interrupt a Ray call in progress.
        threading.Thread(target=self._tell_workers, name="vlv-driver-stop", daemon=True).start()
        if RAY_JOB_ENV in os.environ:  # a Ray job's driver: Ray started it, through a shell or not
            import vlv_ray

            threading.Thread(target=self._watch_parent, args=(vlv_ray.STARTED_BY,), name="vlv-driver-parent",
                             daemon=True).start()
        return self

    def claim(self) -> None:
        """Handle SIGTERM/SIGINT here. Again after `ray.init`: Ray's core installs its own SIGTERM
        handler there, which logs a stack and aborts the process (exit -6)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous = signal.signal(sig, self._on_signal)
                self._previous.setdefault(sig, previous)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        self._asked.set()  # ends the thread (it writes nothing unless a signal came)

    @contextlib.contextmanager
    def deferred(self):
        """An unarmed signal waits for the block to end, then ends the run; `check()` ends it at a
        point of the block's own choosing. For blocks that call into Ray: a signal raised inside
        a Ray call leaves it half done (`ray.init`: a crash at exit), or comes out of Ray's C
        code as a bare KeyboardInterrupt, which lost the signal's name and exit code. Signals
        are also counted at C level while the block runs (`signal.set_wakeup_fd`): Ray's own
        SIGTERM handler, which `ray.init` installs while it runs, raises SystemExit where Ray
        may swallow it."""
        self._deferring = True
        try:
            with _signals_seen() as seen:
                yield
        except SystemExit as e:  # `ray.init` sets a SIGTERM handler of its own (sys.exit) while it runs
            if e.code != signal.SIGTERM:
                raise
            self._deferred = signal.SIGTERM
        finally:
            self._deferring = False
        if self._deferred is None and self.signum is None:
            self._deferred = next((n for n in seen if n in (signal.SIGTERM, signal.SIGINT)), None)
        self.check()

    def check(self) -> None:
        """Inside `deferred()`: end the run now if a signal came (between Ray calls)."""
        if self._deferred is not None:
            raise Interrupted(self._deferred, self.stage)

    def _on_signal(self, signum, frame) -> None:
        if self.signum is not None:
            raise Interrupted(signum, "again: aborted without waiting for the checkpoint")
        if not self.armed:
            if self._deferring:
                self._deferred = signum
                return
            raise Interrupted(signum, self.stage)
        self.signum = signum
        self.say(f"[vlv-ray] {signal.Signals(signum).name}: every worker checkpoints its current step, "
                 "then the run stops (send it again to abort without a checkpoint)", flush=True)
        self._asked.set()

    def _watch_parent(self, parent: int) -> None:
        """A Ray job's driver whose parent is gone stops as for SIGTERM. Ray runs a job's entrypoint
        through `sh -c` and `ray job stop` signals the processes it lists; a stop as the job
        started once killed the shell alone, and the orphaned driver trained on, holding its
        workers' CPUs, while its job read STOPPED."""
        while not self._asked.wait(1.0):
            if os.getppid() != parent:
                self.say(f"[vlv-ray] the process that started this driver (pid {parent}, the job's entrypoint) "
                         "is gone: stopping as for SIGTERM", flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def _tell_workers(self) -> None:
        self._asked.wait()
        if self.signum is None:
            return
        from ray.experimental import internal_kv

        internal_kv._internal_kv_put(self.key, b"1", overwrite=True, namespace=KV_NAMESPACE)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)


@contextlib.contextmanager
def _signals_seen():
    """The numbers of the signals the interpreter's C handler records while the block runs
    (`signal.set_wakeup_fd`), whatever Python handler then ran; on the main thread only."""
    seen = bytearray()
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    try:
        yield seen
    finally:
        signal.set_wakeup_fd(previous)
        try:
            seen += os.read(read, 4096)
        except BlockingIOError:  # none came
            pass
        os.close(read)
        os.close(write)


def pending() -> bool:
    """True once this process has received SIGTERM (no collective: this rank only)."""
    return _requested.is_set()
