"""The live executor and checker: what each decided action does on this host.

Fast actions (starting a supervised virtiofsd, a notify) run on the decision loop;
a respawn of a daemon that still runs completes when the loop sees it exit and
starts the next one (never behind a slow action of the same share).
Slow ones (re-adding the device through the VMM, remounting in the guest, waiting
for a daemon someone else restarts) go to the share's worker thread and report
their outcome later (:meth:`healer.runner.Runner.complete`), so one share's minute
long re-add never holds up another share's respawn.

Every argv and API call is built from the validated configuration: a decision names
its share by its key (the configured name, see :mod:`healer.shares`), and a decision
naming no configured share does nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from healer.actions.alert import alert_document, send_alert
from healer.actions.guest import GuestRemount, RemountFailed
from healer.actions.qemu import QemuReadd
from healer.actions.serial import SerialConsole, SerialRemount
from healer.actions.workers import ShareWorkers, Work
from healer.config import AlertConfig, GuestConfig, ShareConfig, VmmConfig
from healer.engine import Decision
from healer.engine.model import Status
from healer.events import Event
from healer.runner import Outcome
from healer.supervise import has_client, is_listening
from healer.vmm import (
    ChApiClient,
    ChError,
    ChRemote,
    ChTimeout,
    FsShare,
    QmpClient,
    QmpError,
    ReaddError,
    describe_device,
    fs_devices,
    readd_fs,
)

__all__ = ["Daemons", "LiveActions"]

log = logging.getLogger(__name__)

RESPAWNS = frozenset({"respawn_virtiofsd", "ensure_virtiofsd"})
ALERTS = frozenset({"notify", "open_circuit"})
ALERT_LANE = "(alerts)"  # the worker alerts run on: no share is named so


class Daemons(Protocol):
    """What the watchdog tells about, and does to, each share's virtiofsd."""

    def running(self, name: str) -> bool:
        """Whether the share's virtiofsd process is alive (supervised or adopted)."""
        ...

    def pid(self, name: str) -> int | None:
        """The pid of the share's running virtiofsd, if one runs."""
        ...

    def start(self, name: str) -> str | None:
        """Start the supervised virtiofsd now (decision loop only); why not, if it failed."""
        ...

    def request_start(self, name: str) -> None:
        """Ask the decision loop to start it if it is not running (any thread)."""
        ...

    def restart_after_exit(self, name: str, pid: int, key: str) -> bool:
        """Start a new virtiofsd the moment ``pid`` exits and complete ``key`` then.

        False if ``pid`` is not the share's running daemon (it is gone already).
        """
        ...

    def terminate(self, name: str, key: str) -> bool:
        """SIGTERM the running daemon, the next one started the moment it exits."""
        ...


class LiveActions:
    """The runner's executor and checker for ``healer watch``."""

    def __init__(
        self,
        shares: Sequence[ShareConfig],
        daemons: Daemons,
        workers: ShareWorkers,
        *,
        vmm: VmmConfig | None = None,
        guest: GuestConfig | None = None,
        vmms: Sequence[VmmConfig] = (),
        guests: Sequence[GuestConfig] = (),
        alert: AlertConfig | None = None,
        config_file: str = "",
        adopt_wait_s: float = 60.0,
        report: Callable[[Event], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shares = {share.name: share for share in shares}
        self.vmms = {v.name: v for v in (*vmms, *([vmm] if vmm else []))}
        self.guests = {g.vm: g for g in (*guests, *([guest] if guest else []))}
        self.alert = alert
        self.config_file = config_file
        self.daemons = daemons
        self.workers = workers
        self.report = report or (lambda event: None)
        self.qemu: dict[str, QemuReadd] = {}
        self.remounted: set[str] = set()  # QEMU: shares mounted since their last re-add
        self.adopt_wait_s = adopt_wait_s
        self.sleep = sleep
        self.clock = clock

    def share_for(self, decision: Decision) -> ShareConfig | None:
        return self.shares.get(decision.share)

    # --- executor -------------------------------------------------------------------

    def run(self, decision: Decision) -> Outcome | None:
        """Carry out one decision: a status now, or None when a worker carries on."""
        action = decision.action
        if action in ALERTS:
            if action != "notify":  # an opened circuit: its rule notifies as well
                return Status.SUCCEEDED
            log.warning(
                "alert for share %s: rule %s (%s)", decision.share, decision.rule, decision.incident
            )
            alert = self.alert
            if alert is None:
                return Status.SUCCEEDED, "logged only: no [alert] command configured"
            document = alert_document(decision, config=self.config_file)
            if self.workers.submit(ALERT_LANE, decision.key, lambda: send_alert(alert, document)):
                return None
            return Status.FAILED, "too many alerts queued"
        share = self.share_for(decision)
        if share is None:
            log.error("no configured share %r for %s", decision.share, action)
            return Status.FAILED
        if action in RESPAWNS:
            return self._respawn(share, decision)
        if action == "readd_fs":
            if decision.cause is not None and decision.cause.guest:
                return self._submit(share, decision.key, lambda: self._readd_if_unserved(share))
            return self._submit(share, decision.key, lambda: self._readd(share))
        if action == "remount_guest":
            return self._submit(share, decision.key, lambda: self._remount(share))
        log.error("action %s is not available in this version", action)
        return Status.FAILED

    def _submit(self, share: ShareConfig, key: str, work: Work) -> Status | None:
        if self.workers.submit(share.name, key, work):
            return None
        log.error("share %s has too many actions queued: %s not run", share.name, key)
        return Status.FAILED

    def _respawn(self, share: ShareConfig, decision: Decision) -> Outcome | None:
        name, action = share.name, decision.action
        if share.mode == "adopt":
            if action == "ensure_virtiofsd" and self._adopted_ready(share):
                return Status.SUCCEEDED
            return self._submit(share, decision.key, lambda: self._await_adopted(share))
        if self._is_qemu(share):
            # QEMU 7.2 never reconnects a vhost-user-fs backend: the device keeps the
            # dead connection until it is removed and added again.
            if not self.daemons.running(name):
                log.info("virtiofsd of %s is gone: starting it", name)
                failed = self.daemons.start(name)
                if failed is not None:
                    return Status.FAILED, failed
                log.info("virtiofsd of %s started: re-adding the device", name)
            return self._submit(share, decision.key, lambda: self._respawned_under_qemu(share))
        if not self.daemons.running(name):
            failed = self.daemons.start(name)
            return Status.SUCCEEDED if failed is None else (Status.FAILED, failed)
        if action == "ensure_virtiofsd":
            return Status.SUCCEEDED
        if decision.rule == "operator-restart":
            return None if self.daemons.terminate(name, decision.key) else Status.SUCCEEDED
        # It runs but lost its client (the cause said so): it exits by itself in a
        # moment, and the loop starts the next one at that moment. A decision about
        # an earlier daemon that has been replaced meanwhile has nothing left to do.
        pid = decision.cause.pid if decision.cause is not None else None
        current = self.daemons.pid(name)
        if current is None or (pid is not None and pid != current):
            return Status.SUCCEEDED
        waits = self.daemons.restart_after_exit(name, current, decision.key)
        return None if waits else Status.SUCCEEDED

    def _adopted_ready(self, share: ShareConfig) -> bool:
        return self.daemons.running(share.name) and is_listening(share.socket)

    def _await_adopted(self, share: ShareConfig) -> Status:
        """Adopt mode: someone else restarts virtiofsd; wait (bounded) until it listens."""
        deadline = self.clock() + self.adopt_wait_s
        while self.clock() < deadline:
            if self._adopted_ready(share):
                return Status.SUCCEEDED
            self.sleep(0.05)
        log.error(
            "adopted virtiofsd of %s did not come back in %.0f s", share.name, self.adopt_wait_s
        )
        return Status.TIMED_OUT

    def vmm_of(self, share: ShareConfig) -> VmmConfig | None:
        """The VMM of the share's VM (several VMs: each share names its own)."""
        return self.vmms.get(share.vm)

    def _vmm(self, share: ShareConfig) -> ChApiClient | ChRemote | None:
        vmm = self.vmm_of(share)
        if vmm is None or vmm.kind == "qemu":
            return None
        if vmm.ch_remote:
            return ChRemote([a.replace("{api_socket}", vmm.api_socket) for a in vmm.ch_remote])
        return ChApiClient(vmm.api_socket)

    def _is_qemu(self, share: ShareConfig) -> bool:
        vmm = self.vmm_of(share)
        return vmm is not None and vmm.kind == "qemu"

    def _daemon_ready(self, share: ShareConfig, *, unserved: bool = False) -> bool:
        """A running virtiofsd for the share (never checked by connecting to it).

        A supervised share without one asks the loop to start it. ``unserved`` (QEMU):
        it must also serve nobody, since the new chardev needs it; a daemon still
        holding the removed chardev's connection is about to exit.
        """
        if share.mode == "adopt":
            ready = self._adopted_ready(share)
        elif not self.daemons.running(share.name):
            self.daemons.request_start(share.name)
            return False
        else:
            ready = True
        return ready and not (unserved and has_client(share.socket))

    def _respawned_under_qemu(self, share: ShareConfig) -> tuple[Status, str]:
        """After a respawn (on the share's worker): re-add unless a live daemon is served.

        Several reports of one death (the lost client, the exit) each decide a respawn;
        the first re-add serves the new daemon and the later ones find it served.
        """
        if self.daemons.running(share.name) and has_client(share.socket):
            return Status.SUCCEEDED, "served already"
        return self._readd_qemu(share)

    def _readd_qemu(self, share: ShareConfig) -> tuple[Status, str]:
        vmm = self.vmm_of(share)
        assert vmm is not None  # noqa: S101 - checked by the caller
        readd = self.qemu.get(share.name)
        if readd is None:
            readd = self.qemu[share.name] = QemuReadd(
                vmm,
                share,
                is_ready=lambda: self._daemon_ready(share, unserved=True),
                report=self.report,
            )
        status, detail = readd()
        if status == Status.SUCCEEDED:
            self.remounted.discard(share.name)
            if readd.reset:  # the guest boots again and mounts the share itself
                self.remounted.add(share.name)
        return status, detail

    def _readd_if_unserved(self, share: ShareConfig) -> tuple[Status, str]:
        """A guest-written line asked for a re-add: the host's own view decides."""
        if self._device_served(share):
            log.warning(
                "share %s: a line the guest wrote asks for a re-add, but the VMM lists the "
                "device and its virtiofsd has a client: nothing done",
                share.name,
            )
            return (
                Status.CLOSED,
                "the host sees the device served: a guest-written line re-adds nothing",
            )
        return self._readd(share)

    def _readd(self, share: ShareConfig) -> tuple[Status, str]:
        """Remove the fs device, wait until it is gone and virtiofsd runs, add it again."""
        if self._is_qemu(share):
            return self._readd_qemu(share)
        api = self._vmm(share)
        if api is None:
            log.info("no [vmm] configured: re-add of %s skipped", share.name)
            return Status.CLOSED, "no [vmm] configured"
        fs = FsShare(tag=share.tag, socket=share.socket, device_id=share.name)

        # Removing the device ends virtiofsd's one client, so it exits and the loop
        # starts a fresh one: the sequence waits for that through _daemon_ready.
        try:
            done = readd_fs(api, fs, is_ready=lambda: self._daemon_ready(share))
        except ChTimeout as exc:
            log.error("re-add of %s timed out: %s", share.name, exc)
            return Status.TIMED_OUT, str(exc)[:500]
        except (ChError, ReaddError) as exc:
            log.error("re-add of %s failed: %s", share.name, exc)
            return Status.FAILED, str(exc)[:500]
        log.warning("re-added %s as %s", share.name, done.device_id)
        return Status.SUCCEEDED, f"device {done.device_id}"

    def _remount(self, share: ShareConfig) -> Status | tuple[Status, str]:
        guest = self.guests.get(share.vm)
        if guest is None:  # (the outcome's line says so)
            return Status.CLOSED, "no [guest] transport configured"
        if share.mount_point:
            guest = replace(guest, mount_point=share.mount_point)
        if self._is_qemu(share) and not has_client(share.socket):
            # The device is not connected to a virtiofsd: touching the mount now would
            # block in the guest (and take the console's shell with it).
            log.error("remount of %s skipped: the device is not served", share.name)
            return Status.FAILED, "the device is not served by a virtiofsd"
        if self._is_qemu(share) and share.name in self.remounted:
            # Under QEMU a mount goes stale only with its device: one remount per re-add
            # (one death is often reported twice: the lost client, then the exit).
            log.info("remount of %s: already mounted since the last re-add", share.name)
            return Status.SUCCEEDED, "mounted since the last re-add"
        remount: GuestRemount | SerialRemount
        if guest.transport == "serial":
            console = SerialConsole(guest.console, prompt=guest.prompt)
            remount = SerialRemount(console, share.tag, guest.mount_point, guest.rescan)
        else:
            remount = GuestRemount(guest, share.tag)
        try:
            remount.run()
        except RemountFailed as exc:
            log.error(
                "remount of %s failed after %d attempts: %s", share.name, remount.attempts, exc
            )
            return Status.FAILED, f"after {remount.attempts} attempts: {str(exc)[:400]}"
        if self._is_qemu(share):
            self.remounted.add(share.name)
        if isinstance(remount, SerialRemount) and remount.timings:
            shown = ", ".join(f"{k} {v:g}" for k, v in remount.timings.items())
            log.warning("remounted %s in the guest: %s", share.name, shown)
            return Status.SUCCEEDED, shown
        return Status.SUCCEEDED

    # --- checker --------------------------------------------------------------------

    def check(self, decision: Decision) -> str:
        """After a crash: was a started action done? Asks the world, not the journal."""
        action = decision.action
        if action in ALERTS:
            return "done"
        share = self.share_for(decision)
        if share is None:
            return "obsolete"
        if action in RESPAWNS:
            ready = (
                self._adopted_ready(share)
                if share.mode == "adopt"
                else self.daemons.running(share.name)
            )
            return "done" if ready else "redo"
        if action == "readd_fs":
            return "done" if self._device_served(share) else "redo"
        return "redo"  # a remount is safe to repeat: umount, mount, probe

    def _device_served(self, share: ShareConfig) -> bool:
        """The VMM lists the device and a client is connected to its virtiofsd."""
        vmm = self.vmm_of(share)
        if vmm is not None and vmm.kind == "qemu":
            try:
                with QmpClient(vmm.qmp_socket) as qmp:
                    present = describe_device(qmp, share.name) is not None
            except QmpError:
                return False
            return present and has_client(share.socket)
        api = self._vmm(share)
        if api is None:
            return True  # nothing to re-add into
        try:
            devices = fs_devices(api.info())
        except ChError as exc:  # cannot tell: a re-add is safe to repeat, it looks first
            log.warning("share %s: the VMM's devices are unknown (%s): re-adding", share.name, exc)
            return False
        listed = any(share.name == d.get("id") or share.tag == d.get("tag") for d in devices)
        return listed and has_client(share.socket)
