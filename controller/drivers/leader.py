"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from controller.errors import EmbrelError, KubeConflict
from controller.kube import KubeGateway
from controller.ports import Verdict

log = logging.getLogger(__name__)


def micro_time() -> str:
    """RFC 3339 with microseconds: the MicroTime of Leases and Events."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Leader election on a coordination.k8s.io/v1 Lease, as client-go's.

    A replica acquires the Lease when it is absent, released (no holder), or not
    renewed for ``leaseDurationSeconds`` as measured on this replica's own clock since
    it last saw the record change (no trust in other machines' clocks). The leader
    renews every ``retry_period``; if it cannot renew for ``renew_deadline`` it stops
    leading (``on_stopped``). On shutdown it releases the Lease, so a standby takes
    over at once instead of after the lease duration.

    It is also the engine's ``Fence`` (``may_act``): the ``leader`` flag alone is not
    enough, since a renew thread that is stuck never clears it.
    """

    def __init__(
        self,
        kube: KubeGateway,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: int = 15,
        on_started: Callable[[], None] = lambda: None,
        on_stopped: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = max(1, int(lease_duration))
        # client-go's defaults are 15 s / 10 s / 2 s; these scale with the duration.
        self.renew_deadline = self.lease_duration * 2 / 3
        self.retry_period = max(0.2, self.lease_duration / 5)
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.clock = clock
        self.leader = False
        self.healthy = False  # the last attempt got an answer from the API server
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._last_renew = 0.0

    def run(self, stop: threading.Event) -> None:
        """Acquire, then renew, until ``stop`` (the caller releases once its work stopped)."""
        while not stop.is_set():
            if not self.step():
                return
            stop.wait(self.retry_period)

    def step(self) -> bool:
        """One attempt to acquire or renew; False once leadership was lost."""
        # A renewal counts from before its request: a standby measures the lease from
        # when it saw the record change, which is later than this, never earlier.
        started = self.clock()
        ok = self._try()
        now = self.clock()
        if ok:
            self._last_renew = started
            if not self.leader:
                self.leader = True
                log.warning("became the leader (Lease %s/%s)", self.namespace, self.name)
                self.on_started()
        elif self.leader and now - self._last_renew > self.renew_deadline:
            self.leader = False
            self._lost = True
            log.error(
                "could not renew Lease %s/%s for %.1fs: no longer the leader",
                self.namespace,
                self.name,
                now - self._last_renew,
            )
            self.on_stopped()
            return False
        return True

    def may_act(self) -> Verdict:
        """The fence: leading, and renewed within the renew deadline.

        A standby takes the Lease ``lease_duration`` after it last saw it change; past the
        renew deadline (two thirds of that) this replica no longer assumes it leads, even
        while ``leader`` is still true because the renew thread is stuck or paused.
        """
        lease = f"Lease {self.namespace}/{self.name}"
        if not self.leader:
            return Verdict(False, f"{self.identity} does not hold {lease}")
        age = self.clock() - self._last_renew
        if age >= self.renew_deadline:
            return Verdict(
                False,
                f"{self.identity} last renewed {lease} {age:.1f}s ago (renew deadline "
                f"{self.renew_deadline:.1f}s): it may have expired and another replica lead",
            )
        return Verdict(True)

    def _try(self) -> bool:
        try:
            acquired = self._acquire_or_renew()
            self.healthy = True
            return acquired
        except KubeConflict:  # another replica wrote the Lease first
            self.healthy = True
            return False
        except EmbrelError as exc:
            self.healthy = False
            log.warning("leader election: %s", exc)
            return False

    def _spec(self, acquired: str, now: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_duration,
            "acquireTime": acquired,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def _acquire_or_renew(self) -> bool:
        lease = self.kube.get_lease(self.namespace, self.name)
        now = micro_time()
        if lease is None:
            self.kube.create_lease(
                self.namespace,
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(now, now, 0),
                },
            )
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            acquired = spec.get("acquireTime") or now
        else:
            record = (holder, spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
            if record != self._observed:
                self._observed, self._observed_at = record, self.clock()
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
            if holder and self.clock() - self._observed_at < duration:
                return False  # held by a live leader
            acquired, transitions = now, transitions + 1
        lease["spec"] = self._spec(acquired, now, transitions)
        self.kube.replace_lease(self.namespace, lease)
        return True

    def release(self) -> None:
        """Give the Lease up (shutdown), so a standby need not wait for it to expire."""
        if not self.leader:
            return
        self.leader = False
        try:
            lease = self.kube.get_lease(self.namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"].update(
                    holderIdentity="", leaseDurationSeconds=1, renewTime=micro_time()
                )
                self.kube.replace_lease(self.namespace, lease)
                log.warning("released Lease %s/%s", self.namespace, self.name)
        except EmbrelError as exc:
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, exc)
