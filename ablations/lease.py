"""One driver per study: while `ablate run` runs a study it holds the study's lease, kept in
the tracking store, where every driver of the study meets whatever machine it runs on
(docs/tracking.md, "The lease").

MLflow has no transactions, so the lease is taken by compare-after-write: each driver
writes a claim of its own (an MLflow run in the study's experiment, tagged `ablate.lease`:
host, process, heartbeat), waits SETTLE_S, reads every live claim and wins only if no other
claim is held and its own is the oldest, (start time, run id), of those it sees; the winner
marks its claim held, a loser deletes its claim. Two winners would need one claim to be
invisible to the other's read, so written after that read; its own read then comes SETTLE_S
later still, by when the first winner's held mark (one write, issued right after its read)
is there to see. So a held mark that takes less than SETTLE_S to commit (MLflow's writes
return once committed) leaves one winner. A driver that starts while the study runs sees
the held claim at once and refuses (or, with --wait, waits) without writing.

The holder refreshes its claim's heartbeat every TIMEOUT_S / 6 from a daemon thread; a
claim whose heartbeat is older than TIMEOUT_S (ABLATE_LEASE_TIMEOUT, default 60 s) belongs
to a driver that died (kill -9, a lost machine) and is ignored and deleted by the next
driver. Heartbeats are the hosts' clocks: they must agree to well within TIMEOUT_S (NTP).
A holder that cannot refresh its heartbeat for TIMEOUT_S stops its study as Ctrl-C does,
since another driver may take it over from then on."""

from __future__ import annotations

import _thread
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass

from ablations.errors import AblateError
from ablations.tracking import Store, StoreLost
from reports.layout import Tag

SETTLE_S = 2.0  # longer than one write to the store takes to commit
LEASE, HELD, HOST, PID = Tag.LEASE, Tag.LEASE_HELD, Tag.LEASE_HOST, Tag.LEASE_PID
HEARTBEAT = Tag.LEASE_HEARTBEAT


def timeout_s() -> float:
    """Seconds without a heartbeat after which a lease has expired."""
    text = os.environ.get("ABLATE_LEASE_TIMEOUT", "60")
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise AblateError(f"ABLATE_LEASE_TIMEOUT={text!r}: give seconds, a positive number")
    return value


@dataclass(frozen=True)
class Claim:
    """A driver's claim on a study, as the store holds it."""

    run_id: str
    host: str
    pid: int
    since: float  # epoch seconds: when it was claimed
    heartbeat: float  # epoch seconds: the holder's latest sign of life
    held: bool

    def live(self, now: float | None = None) -> bool:
        return (now or time.time()) - self.heartbeat <= timeout_s()

    def where(self) -> str:
        """`on HOST (process PID) since TIME`."""
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.since))
        return f"on {self.host} (process {self.pid}) since {since}"

    def refusal(self, name: str) -> str:
        return (
            f"study {name} is already running {self.where()}; wait for it with "
            f"`ablate run ... --wait`, or stop it there (kill {self.pid}); if that process "
            f"is gone, its lease expires {timeout_s():g} s after its last heartbeat"
        )


def claims(store: Store, experiment_id: str) -> list[Claim]:
    """Every claim on the study (live or not), oldest first."""
    runs = store.client.search_runs([experiment_id], f"tags.`{LEASE}` = 'claim'")
    found = []
    for run in runs:
        tags = run.data.tags
        since = (run.info.start_time or 0) / 1000
        beat = float(tags.get(HEARTBEAT, since * 1000)) / 1000
        found.append(
            Claim(
                run.info.run_id,
                tags.get(HOST, "?"),
                int(tags.get(PID, "0")),
                since,
                beat,
                tags.get(HELD) == "true",
            )
        )
    return sorted(found, key=lambda c: (c.since, c.run_id))


def holder(store: Store, name: str) -> Claim | None:
    """The live claim that runs the study now (None: nobody runs it)."""
    experiment = store.client.get_experiment_by_name(name)
    if experiment is None:
        return None
    live = [c for c in claims(store, experiment.experiment_id) if c.live()]
    return next((c for c in live if c.held), live[0] if live else None)


def refuse_if_running(store: Store | None, name: str) -> None:
    """Refuse a study another driver runs now (a cheap read, before planning it)."""
    found = holder(store, name) if store is not None else None
    if found is not None:
        raise AblateError(found.refusal(name))


class Lease:
    """`with Lease(store, name):` the study's lease, held until the block ends however it
    ends (normal exit, an error, Ctrl-C or SIGTERM). `wait`: wait for a running driver to end
    instead of refusing."""

    def __init__(self, store: Store, name: str, wait: bool = False):
        self.store, self.name, self.wait = store, name, wait
        self.timeout = timeout_s()
        self.run_id: str | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> Lease:
        experiment_id = self.store.experiment_id(self.name)
        told = False
        while True:
            blocker = self._try(experiment_id)
            if blocker is None:
                break
            if not self.wait:
                raise AblateError(blocker.refusal(self.name))
            if not told:
                print(
                    f"ablate: {self.name} is running {blocker.where()}; waiting for it to end",
                    file=sys.stderr,
                    flush=True,
                )
                told = True
            time.sleep(min(self.timeout / 6, 10.0))
        self._beat = threading.Thread(target=self._heartbeat, name="ablate-lease", daemon=True)
        self._beat.start()
        return self

    def __exit__(self, kind, error, trace) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=10)
        if self.run_id is not None:
            try:
                self.store.client.delete_run(self.run_id)
            except Exception as err:  # noqa: BLE001 - the study's outcome matters more
                if isinstance(error, StoreLost):
                    return  # its own line says the store is gone
                print(
                    f"ablate: could not release the lease of {self.name} ({_line(err)}); "
                    f"it expires in {self.timeout:g} s",
                    file=sys.stderr,
                )

    def _try(self, experiment_id: str) -> Claim | None:
        """Claim the study; None when this driver won, else the claim that blocks it."""
        now = time.time()
        found = claims(self.store, experiment_id)
        for dead in (c for c in found if not c.live(now)):
            self._drop(dead.run_id)  # a driver that died: its lease expired
        held = [c for c in found if c.live(now) and c.held]
        if held:
            return held[0]
        tags = {LEASE: "claim", HOST: socket.gethostname(), PID: str(os.getpid())}
        tags[HEARTBEAT] = str(int(time.time() * 1000))
        label = f"lease: {tags[HOST]} process {tags[PID]}"
        mine = self.store.client.create_run(experiment_id, run_name=label, tags=tags)
        mine_id = mine.info.run_id
        try:
            time.sleep(SETTLE_S)
            # Its own claim counts however slow the store was to answer meanwhile.
            live = [c for c in claims(self.store, experiment_id) if c.live() or c.run_id == mine_id]
            others = [c for c in live if c.held and c.run_id != mine_id]
            first = live[0] if live else None
            if others or first is None or first.run_id != mine_id:
                self._drop(mine_id)
                return others[0] if others else first or Claim(mine_id, "?", 0, now, now, False)
            self.store.set_tags(mine_id, {HELD: "true", HEARTBEAT: str(int(time.time() * 1000))})
        except BaseException:
            self._drop(mine_id)  # Ctrl-C while claiming: no claim left to block others
            raise
        self.run_id = mine_id
        return None

    def _drop(self, run_id: str) -> None:
        try:
            self.store.client.delete_run(run_id)
        except Exception:  # noqa: BLE001 - another driver deleted it first
            pass

    def _heartbeat(self) -> None:
        """Every timeout / 6: the heartbeat; after a timeout of failed writes the study stops
        (another driver may take it over by then)."""
        last = time.monotonic()
        while not self._stop.wait(self.timeout / 6):
            try:
                self.store.set_tags(self.run_id, {HEARTBEAT: str(int(time.time() * 1000))})
                last = time.monotonic()
            except Exception as err:  # noqa: BLE001 - reported, then judged by the timeout
                if time.monotonic() - last > self.timeout:
                    print(
                        f"ablate: lost the lease of {self.name} (no heartbeat for "
                        f"{self.timeout:g} s: {_line(err)}); stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    _thread.interrupt_main()
                    return


def _line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300]
