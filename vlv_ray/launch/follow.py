"""Submit the job and follow it: its log lines, one live status line under them, capacity, budget.

The status line (`watch.status_line`): step, samples/s (from the run's own log lines),
dollars the whole cluster has cost against the budget, nodes by market, the pool in use.
On a terminal it is redrawn in place under the log lines; piped (CI, `tee`), it is printed
as a line of its own when it changes, at most every few seconds.

The budget guards the cluster, not only the run: the job is submitted with what is left of
the budget after what the cluster cost outside the run's own ledger, so its guard checkpoints
and stops in time (vlv_ray/cost/budget.py); should the cluster's total reach the budget
anyway, the job is stopped here.
"""
from __future__ import annotations

import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from vlv_ray import storage
from vlv_ray.launch.backend import ClusterFailed
from vlv_ray.launch.watch import ClusterWatch, status_line
from vlv_ray.train import auth

STEP = re.compile(r"step (\d+)/(\d+) \|.*?\| ([\d.]+) samples/s")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
PLAIN_EVERY_S = 5.0
DASHBOARD_PATIENCE_S = 180.0  # a head that does not answer this long is taken for gone
REATTACH_TAIL = 20  # lines of context shown when following a job again
BUDGET_GRACE_S = 120.0  # past the budget, how long the job's guard gets to checkpoint and stop


def wait_dashboard(url: str | None, timeout_s: float = 300.0) -> None:
    """Until the head's dashboard answers at all (any HTTP status: token auth may refuse us)."""
    if not url:
        raise ClusterFailed("the launch state has no dashboard address: `vlv-ray launch --down NAME` and launch again")
    deadline = time.time() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url + "/api/version", timeout=10).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.time() > deadline:
                raise ClusterFailed(f"the head's dashboard at {url} did not answer in {timeout_s:.0f} s") from None
            time.sleep(1)


class Console:
    """Log lines scroll; the status line stays under them."""

    def __init__(self, log_file: Path, stream=None):
        self.out = stream or sys.stdout
        self.tty = self.out.isatty()
        self.log = log_file.open("a")
        self.status, self.printed, self.printed_at = "", "", 0.0

    def line(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()
        if self.tty:
            self.out.write("\r\x1b[K" + text + "\n" + self.status)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def set_status(self, text: str) -> None:
        self.status = text
        if self.tty:
            self.out.write("\r\x1b[K" + text)
            self.out.flush()
            return
        core = re.sub(r"\$[\d.]+ of", "", text)  # dollars move every poll; print on a real change
        if core != self.printed and time.time() - self.printed_at >= PLAIN_EVERY_S:
            self.out.write(text + "\n")
            self.out.flush()
            self.printed, self.printed_at = core, time.time()

    def close(self) -> None:
        if self.tty and self.status:
            self.out.write("\n")
        self.log.close()


class Follower:
    def __init__(self, plan, opts, backend, watch: ClusterWatch):
        from vlv_ray.train.submit import _client

        self.plan, self.opts, self.backend, self.watch = plan, opts, backend, watch
        self.state = plan.state
        self.client = _client(self.state.dashboard)
        self.step = self.rate = None
        self.stopping, self.over_since = False, None

    def budget_left(self) -> float | None:
        """The budget minus what the cluster cost outside the run's own ledger (which the
        job's guard adds by itself: it reloads its ledger when it resumes)."""
        budget = self.state.budget_usd
        if budget is None:
            return None
        from vlv_ray.cost.ledger import Ledger

        cluster = self.watch.poll().usd
        paths = self.plan.paths
        try:
            run = Ledger.load(paths.run, self.plan.cfg.name, **paths.storage).total_usd
        except Exception:  # noqa: BLE001 (unreadable: count it all as the cluster's)
            run = 0.0
        return budget - max(0.0, cluster - run)

    def submit(self, overrides: list[str]) -> None:
        from vlv_ray.train import submit

        job_id, _ = submit.submit(self.state.job, address=self.state.dashboard, overrides=overrides, wait=False)
        self.state.job_id, self.state.status = job_id, "running"
        self.state.save()

    def follow(self, *, attached: bool = False) -> str:
        """Until the job ends; returns how: succeeded | failed | budget. Re-attached, it shows
        only the last `REATTACH_TAIL` lines the job logged while nobody followed."""
        console = Console(self.state.sibling(".log"))
        offset, pending, text, cut = 0, "", "", attached
        try:
            answered = time.time()
            while True:
                try:
                    status = str(self.client.get_job_status(self.state.job_id)).split(".")[-1]
                    logs = self.client.get_job_logs(self.state.job_id)
                    answered = time.time()
                except Exception as e:  # noqa: BLE001 (a busy or restarting head: ask again, for a while)
                    if time.time() - answered > DASHBOARD_PATIENCE_S:
                        raise ClusterFailed(f"the head's dashboard at {self.state.dashboard} has not answered for "
                                            f"{DASHBOARD_PATIENCE_S:.0f} s ({storage.redact(str(e))[:200]})") from None
                    time.sleep(self.opts.poll_s)
                    continue
                new, offset = logs[offset:], len(logs)
                text += new
                pending += new
                *lines, pending = pending.split("\n")
                skip = max(0, len(lines) - REATTACH_TAIL) if cut else 0
                if skip:
                    console.line(f"[launch] … {skip} earlier lines of the job: "
                                 f"{auth.cli_prefix()}ray job logs --address {self.state.dashboard} {self.state.job_id}")
                for i, line in enumerate(lines):
                    m = STEP.search(line)
                    if m:
                        self.step, self.rate = f"{m[1]}/{m[2]}", m[3]
                    if i >= skip:
                        console.line(line)
                cut = False  # only the first read of a re-attached job is cut
                snap = self._poll(console, status)
                console.set_status(status_line(self.step, self.rate, snap, self.state.budget_usd, self.state.pool))
                if status in TERMINAL:
                    if pending:
                        console.line(pending)
                    break
                time.sleep(self.opts.poll_s)
        finally:
            console.close()
        self.state.job_status = status
        self.state.save()
        print(f"[launch] job {self.state.job_id}: {status}", flush=True)
        if "[vlv-ray] budget: spent $" in text or (self.stopping and status == "STOPPED"):
            return "budget"
        return "succeeded" if status == "SUCCEEDED" else "failed"

    def _poll(self, console: Console, status: str):
        try:
            snap = self.watch.poll()
        except Exception as e:  # noqa: BLE001 (a slow head: keep following; the next poll retries)
            console.line(f"[launch] could not read the cluster's nodes: {storage.redact(str(e))[:200]}")
            return self.watch.last
        if status in TERMINAL:
            return snap
        to = self.watch.next_pool(snap)
        if to is not None:
            waited = snap.at - (self.watch.waiting_since or snap.at)
            console.line("[launch] " + self.watch.switched(to, waited))
            self.backend.switch(self.plan.spec.with_pool(to.node_type))
            self.state.save()
        budget = self.state.budget_usd
        if budget is not None and snap.usd >= budget and not self.stopping:
            # The job's own guard (its share of the budget) checkpoints and stops at its next
            # step once its ledger shows it; a job that does not within the grace is stopped.
            grace = max(BUDGET_GRACE_S, 3 * self.plan.cfg.cost.poll_s)
            if self.over_since is None:
                self.over_since = snap.at
                console.line(f"[launch] budget: the cluster has cost ${snap.usd:.4f} of the budget ${budget:.2f}; "
                             f"the job checkpoints and stops at its next step, or is stopped in {grace:.0f} s")
            elif snap.at - self.over_since >= grace:
                console.line(f"[launch] budget: the job has not stopped in {grace:.0f} s: stopping it")
                self.client.stop_job(self.state.job_id)
                self.stopping = True
        return snap
