"""One driver per run: a lease object in the run directory, kept alive by a heartbeat.

`<storage_path>/<name>/_LEASE.json` holds {owner, host, pid, user, started, heartbeat}.
A second driver with the same name and storage path finds a live lease and stops with one
line naming its holder; a lease whose heartbeat is older than `checkpoint.lease_timeout_s`
was left by a driver that died, and is taken over with a line saying so.

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


def describe(holder: dict[str, Any], now: float) -> str:
    age = now - float(holder.get("heartbeat", 0))
    return (f"pid {holder.get('pid')} on {holder.get('host')} (user {holder.get('user')}), "
            f"last heartbeat {age:.0f}s ago")


class Lease:
    def __init__(self, run: str, timeout_s: float, *, settle_s: float = 1.0, **kw):
        self.uri = storage.join(run, LEASE_FILE)
        self.timeout_s, self.settle_s, self.kw = timeout_s, settle_s, kw
        self.me = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
                   "user": _user(), "started": time.time()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None  # set when another driver took the lease from us

    def _read(self) -> dict[str, Any] | None:
        try:
            return storage.read_json(self.uri, **self.kw)
        except FileNotFoundError:
            return None
        except ValueError:  # a torn write on a store without atomic puts: nobody holds it
            return None

    def _write(self) -> None:
        storage.write_json_atomic(self.uri, {**self.me, "heartbeat": time.time()}, **self.kw)

    def acquire(self, say=print) -> "Lease":
        holder = self._read()
        now = time.time()
        if holder and holder.get("owner") != self.me["owner"]:
            if now - float(holder.get("heartbeat", 0)) < self.timeout_s:
                raise LeaseHeld(f"{self.uri}: the run is in use by {describe(holder, now)}; wait for it to end, "
                                f"or use another name")
            say(f"[vlv-ray] taking over the run from {describe(holder, now)} "
                f"(stale: no heartbeat for {self.timeout_s:.0f}s)", flush=True)
        self._write()
        time.sleep(self.settle_s)  # a driver that started at the same instant has written by now
        holder = self._read()
        if not holder or holder.get("owner") != self.me["owner"]:
            raise LeaseHeld(f"{self.uri}: another driver took the run while this one started: "
                            f"{describe(holder or {}, time.time())}")
        self._thread = threading.Thread(target=self._beat, name="vlv-lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.timeout_s / 4):
            try:
                holder = self._read()
                if holder and holder.get("owner") != self.me["owner"]:
                    self.lost = describe(holder, time.time())
                    print(f"[vlv-ray] warning: {self.uri} was taken over by {self.lost}; "
                          "this run no longer owns its checkpoints", flush=True)
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
