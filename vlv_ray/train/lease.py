"""One driver per run: a lease object in the run directory, kept alive by a heartbeat.

`<storage_path>/<name>/_LEASE.json` holds {owner, host, pid, user, started, heartbeat,
heartbeat_s, timeout_s}. A second driver with the same name and storage path finds a live
lease and stops with one line naming its holder. Whether a lease is stale is judged by the
*holder's* own timeout, recorded in the lease: a newcomer started with a shorter
`checkpoint.lease_timeout_s` must not take a run whose holder beats less often than that.
A lease silent for longer than its holder's timeout was left by a driver that died (or
hangs), and is taken over with a line saying so.

The holder fences itself: its heartbeat stops once it finds the lease taken, and the run's
workers check `owned()` before every checkpoint and stop without writing when another
driver holds the run (train/checkpoint.py). A takeover deletes nothing a holder
that only hangs could still be writing (train/precheck.py).

It is a plain object written through `storage`, so it works the same on a local disk and
on S3, which has no locks. Two drivers starting within the same instant could both see no
lease; each writes its own, waits, and reads it back: the later write wins and the other
driver stops. The heartbeat is a daemon thread on the driver, one small write every
timeout/4 seconds.
"""
from __future__ import annotations

import getpass
import os
import socket
import threading
import time
import uuid
from typing import Any

from vlv_ray import storage
from vlv_ray.storage import StorageError

LEASE_FILE = "_LEASE.json"


class LeaseHeld(StorageError):
    """Another live driver holds the run."""


class LeaseLost(RuntimeError):
    """This run's driver no longer holds the run: another driver took it over."""


def holder_timeout(holder: dict[str, Any], default: float) -> float:
    """The holder's own timeout (leases written before it was recorded: `default`)."""
    try:
        return float(holder["timeout_s"])
    except (KeyError, TypeError, ValueError):
        return default


def owned(run: str, owner: str, **kw) -> bool:
    """Whether the lease of `run` is still held by `owner` (workers ask before writing)."""
    try:
        holder = storage.read_json(storage.join(run, LEASE_FILE), **kw)
    except FileNotFoundError:
        return False
    except storage.NotJSON:  # a torn write on a store without atomic puts: the next read decides
        return True
    return isinstance(holder, dict) and holder.get("owner") == owner


def check_owned(run: str, owner: str | None, **kw) -> None:
    """Raise LeaseLost unless `owner` (None: no lease, a --local run) still holds `run`."""
    if owner is not None and not owned(run, owner, **kw):
        raise LeaseLost(f"{storage.join(run, LEASE_FILE)}: another driver took over this run; "
                        "this one stops without writing")


def describe(holder: dict[str, Any], now: float) -> str:
    age = now - float(holder.get("heartbeat", 0))
    return (f"pid {holder.get('pid')} on {holder.get('host')} (user {holder.get('user')}), "
            f"last heartbeat {age:.0f}s ago")


class Lease:
    def __init__(self, run: str, timeout_s: float, *, settle_s: float = 1.0, **kw):
        self.uri = storage.join(run, LEASE_FILE)
        self.timeout_s, self.settle_s, self.kw = timeout_s, settle_s, kw
        self.me = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
                   "user": _user(), "started": time.time(), "heartbeat_s": timeout_s / 4, "timeout_s": timeout_s}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None  # set when another driver took the lease from us
        self.took_over: dict[str, Any] | None = None  # the stale holder this driver replaced

    def _read(self) -> dict[str, Any] | None:
        try:
            return storage.read_json(self.uri, **self.kw)
        except FileNotFoundError:
            return None
        except storage.NotJSON:  # a torn write on a store without atomic puts: nobody holds it
            return None

    def _write(self) -> None:
        storage.write_json_atomic(self.uri, {**self.me, "heartbeat": time.time()}, **self.kw)

    def acquire(self, say=print) -> "Lease":
        holder = self._read()
        now = time.time()
        if holder and holder.get("owner") != self.me["owner"]:
            timeout = holder_timeout(holder, self.timeout_s)  # the holder's, not ours
            if now - float(holder.get("heartbeat", 0)) <= timeout:
                raise LeaseHeld(f"{self.uri}: the run is in use by {describe(holder, now)}; wait for it to end, "
                                f"or use another name")
            say(f"[vlv-ray] taking over the run from {describe(holder, now)} "
                f"(stale: no heartbeat for longer than its timeout of {timeout:.0f}s)", flush=True)
            self.took_over = holder
        self._write()
        try:
            time.sleep(self.settle_s)  # a driver that started at the same instant has written by now
            holder = self._read()
        except BaseException:  # a signal (the driver told to stop): the lease written is not left behind
            self.release()
            raise
        if not holder or holder.get("owner") != self.me["owner"]:
            raise LeaseHeld(f"{self.uri}: another driver took the run while this one started: "
                            f"{describe(holder or {}, time.time())}")
        self._thread = threading.Thread(target=self._beat, name="vlv-lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.me["heartbeat_s"]):
            try:
                holder = self._read()
                if holder is None or holder.get("owner") != self.me["owner"]:
                    # Taken, or deleted by a driver that took it and has ended: not ours either way.
                    self.lost = describe(holder, time.time()) if holder else "a driver that has released it"
                    print(f"[vlv-ray] warning: {self.uri} was taken over by {self.lost}; "
                          "this run no longer owns its checkpoints and writes none", flush=True)
                    return
                self._write()
            except OSError as e:  # a storage hiccup: the next beat tries again
                print(f"[vlv-ray] lease heartbeat failed ({type(e).__name__}); retrying", flush=True)

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        holder = self._read()
        if holder and holder.get("owner") == self.me["owner"]:
            storage.delete(self.uri, **self.kw)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
