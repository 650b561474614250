"""A stand-in for cloud-hypervisor: its API socket, its fs devices and its log lines.

cloud-hypervisor cannot be installed here, and healer's heals go through it. This
serves ``vmm.ping``, ``vm.info``, ``vm.add-fs``, ``vm.remove-device`` and ``vm.reboot``
on a Unix socket (0600), one request at a time like CH's ``http-server`` thread, with
the status codes and error bodies of the chosen version (ch-api.md §4). Each fs device
is a real vhost-user front end for a real virtiofsd (:mod:`healer.sim.ch_backends`): it
connects with CH's loop (retry every 100 ms for 60 s, both settable), keeps the
connection, reconnects when the backend hangs up, and reconnects after a guest reboot.
While a connect loop runs on the VMM thread every API call waits, as in CH.

The log lines use CH's formats and message texts (log-formats.md §1 and §3), so
healer's own parser can be exercised end to end (:mod:`healer.sim.ch_log`); the texts
per version come from :mod:`healer.vmm.chformat`. This module is the VMM: its state,
the routes (the HTTP framing is :mod:`healer.sim.ch_http`) and the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from healer.sim.ch_backends import Backends, BackendStats, FsDevice
from healer.sim.ch_http import serve_connection
from healer.sim.ch_log import ChLog
from healer.vmm.chformat import (
    ApiFail,
    FsConfig,
    backend_fail,
    bad_request,
    config_clash,
    fatal_exit,
    parse_version,
    request_event,
    tree_clash,
    unknown_device,
    worker_failed,
)

__all__ = ["BackendStats", "ChStandIn", "FsConfig", "main"]


class ChStandIn:
    """cloud-hypervisor as seen through its API socket, log and vhost-user sockets.

    ``eject_delay_s`` is how long the guest takes to acknowledge a removal (None: it
    never does, as in issue #8763; :meth:`eject` does it by hand). Without
    ``device_tree_in_info`` vm.info answers as before v0.12. ``handshake_timeout_s``
    bounds each handshake; CH has no such bound, and a handshake given up on a held
    socket leaves a dead connection in its backlog for the next virtiofsd to accept.
    """

    def __init__(
        self,
        api_socket: str | Path,
        log_path: str | Path,
        *,
        version: str = "v53",
        fs: Sequence[FsConfig] = (),
        connect_timeout_s: float = 60.0,
        retry_interval_s: float = 0.1,
        handshake_timeout_s: float = 5.0,
        eject_delay_s: float | None = 0.05,
        device_tree_in_info: bool = True,
        running: bool = True,
        request_timeout_s: float = 5.0,
        vmm_wait_s: float = 300.0,
        join_timeout_s: float = 10.0,
    ) -> None:
        self.api_socket = Path(api_socket)
        self.version = parse_version(version)
        self.connect_timeout_s = connect_timeout_s
        self.retry_interval_s = retry_interval_s
        self.handshake_timeout_s = handshake_timeout_s
        self.eject_delay_s = eject_delay_s
        self.device_tree_in_info = device_tree_in_info
        self.running = running
        self.request_timeout_s = request_timeout_s
        self.vmm_wait_s = vmm_wait_s
        self.join_timeout_s = join_timeout_s
        self.tick_s = 0.02
        self.log_path = Path(log_path)
        self.log = ChLog(self.log_path, self.version)
        self.api_errors: list[tuple[str, int, tuple[str, ...]]] = []
        self.exited = False
        self._boot = list(fs)
        self._config: list[FsConfig] = []
        self._tree: dict[str, FsDevice] = {}
        self._names = 0
        self._backends = Backends(
            self.log,
            self.version,
            connect_timeout_s=connect_timeout_s,
            retry_interval_s=retry_interval_s,
            handshake_timeout_s=handshake_timeout_s,
            tick_s=self.tick_s,
        )
        self._vmm = threading.RLock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> ChStandIn:
        """Listen on the API socket (0600) and serve from a background thread."""
        if self.api_socket.is_symlink() or self.api_socket.exists():
            if not stat.S_ISSOCK(self.api_socket.lstat().st_mode):
                msg = f"{self.api_socket} exists and is not a socket; refusing to replace it"
                raise FileExistsError(msg)
            self.api_socket.unlink()  # stale, like CH v53 under its lock file
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(str(self.api_socket))
        finally:
            os.umask(old)
        listener.listen(16)
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, name="http-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop every backend connection, remove the socket (bounded)."""
        self._stopping.set()
        devices = list(self._tree.values())
        for device in devices:
            device.kill.set()
        late = []
        for thread in [self._thread, *(d.thread for d in devices)]:
            if thread is not None and thread is not threading.current_thread():
                thread.join(self.join_timeout_s)
                late += [thread.name] if thread.is_alive() else []
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.api_socket.lstat().st_mode):
                self.api_socket.unlink()
        self.log.close()
        if late:
            msg = f"threads still running after {self.join_timeout_s} s: {late}"
            raise RuntimeError(msg)

    def __enter__(self) -> ChStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def serving(self) -> bool:
        """Whether the API thread still runs (False once a simulated exit took effect)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> BackendStats:
        return self._backends.stats

    def device_ids(self) -> list[str]:
        """The ids in ``device_tree`` (including removed, not yet ejected ones)."""
        with self._vmm:
            return list(self._tree)

    @contextlib.contextmanager
    def hold_vmm(self) -> Iterator[None]:
        """Keep the VMM thread busy, as a 60 s connect loop does: the API stalls."""
        with self._vmm:
            yield

    def eject(self, device_id: str) -> bool:
        """The guest acknowledges the removal of ``device_id`` now."""
        with self._vmm:
            device = self._tree.get(device_id)
            if device is None or device.state != "removing":
                return False
            self._eject(device)
            return True

    def guest_reboot(self) -> bool:
        """A guest-initiated reset: all devices re-created; False if the VMM died of it."""
        with self._vmm:
            self.log.write("INFO", "vmm", "reset", "VM reset event")
            if self._recreate():
                return True
            self.log.raw(fatal_exit(self.version, boot=False))
            self._exit()
            return False

    # --- the VMM's work ------------------------------------------------------------

    def _serve(self) -> None:
        listener = self._listener
        assert listener is not None  # noqa: S101 - start() set it
        try:
            if self._boot and not self._boot_devices():
                return
            while not self._stopping.is_set() and not self.exited:
                self._eject_due()
                ready, _, _ = select.select([listener], [], [], self.tick_s)
                if not ready:
                    continue
                conn, _ = listener.accept()
                with conn:
                    if not self.exited:  # a dead VMM answers nothing
                        serve_connection(conn, self)
        finally:
            listener.close()  # the file stays until stop(): a dead CH leaves it behind

    def dispatch(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        """Route one HTTP request the way CH's ``http-server`` does."""
        routes = {
            "/api/v1/vmm.ping": ("GET", False, self._ping),
            "/api/v1/vm.info": ("GET", False, self._info),
            "/api/v1/vm.add-fs": ("PUT", True, self._add_fs),
            "/api/v1/vm.remove-device": ("PUT", True, self._remove_device),
            "/api/v1/vm.reboot": ("PUT", False, self._reboot),
        }
        route = routes.get(path)
        if route is None:
            return (404, b"") if self.version < 47 else self._fail(path, bad_request("NotFound"))
        want, takes_body, handler = route
        if method not in ("GET", "PUT"):
            return 400, b""
        if method != want or bool(body) != takes_body:
            return self._fail(path, bad_request("BadRequest"))
        if not self._enter_vmm():
            return self._fail(path, bad_request("InternalServerError"))
        try:
            outcome = handler(body)
        finally:
            self._vmm.release()
        if isinstance(outcome, ApiFail):
            return self._fail(path, outcome)
        status, answer = outcome
        return status, b"" if answer is None else orjson.dumps(answer)

    def _enter_vmm(self) -> bool:
        deadline = time.monotonic() + self.vmm_wait_s
        while not self._stopping.is_set() and time.monotonic() < deadline:
            if self._vmm.acquire(timeout=self.tick_s):
                return True
        return False

    def _fail(self, path: str, fail: ApiFail) -> tuple[int, bytes]:
        status = fail.status(self.version)
        self.api_errors.append((path.rsplit("/", 1)[-1], status, fail.chain))
        if self.version >= 52:
            text = ": ".join(fail.chain)
            self.log.write("INFO", "http-server", "http_error", f"HTTP API error response: {text}")
        return status, fail.body(self.version)

    def _ping(self, body: bytes) -> tuple[int, dict[str, Any]]:
        self._request_event("VmmPing")
        answer: dict[str, Any] = {"version": f"v{self.version}.0"}
        if self.version >= 32:
            answer |= {"build_version": f"v{self.version}.0-sim", "pid": os.getpid()}
        if self.version >= 36:
            answer["features"] = []
        return 200, answer

    def _info(self, body: bytes) -> tuple[int, dict[str, Any]]:
        self._request_event("VmInfo")
        fs = [c.to_json(self.version) for c in self._config]
        config = {
            "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
            "memory": {"size": 536870912, "shared": True},
            "payload": {"kernel": "/sim/vmlinux", "cmdline": "console=hvc0"},
            "fs": fs or None,
        }
        answer: dict[str, Any] = {
            "config": config,
            "state": "Running" if self.running else "Created",
            "memory_actual_size": 536870912,
        }
        if self.device_tree_in_info:
            tree: dict[str, Any] = {}
            for device_id, device in self._tree.items():
                pci = f"_virtio-pci-{device_id}"
                tree[device_id] = _node(device_id, pci, [], None)
                tree[pci] = _node(pci, None, [device_id], device.bdf)
            answer["device_tree"] = tree
        return 200, answer

    def _add_fs(self, body: bytes) -> tuple[int, dict[str, Any] | None] | ApiFail:
        try:
            config = FsConfig.from_json(orjson.loads(body))
        except (orjson.JSONDecodeError, ValueError) as exc:
            return bad_request("SerdeJsonDeserialize", str(exc))
        self._request_event("VmAddFs", config)
        config = self._named(config)
        device_id = config.device_id or ""
        fail = None
        if any(c.device_id == device_id for c in self._config):
            fail = config_clash(device_id)
        elif device_id in self._tree:
            fail = tree_clash(device_id)
        elif not self.running:  # v22+: a created VM takes the config only (204)
            self._config.append(config)
            return 204, None
        else:
            device = self._create(config)
            if device is not None:
                self._config.append(config)
                return 200, {"id": device_id, "bdf": device.bdf}
            fail = backend_fail("VmAddFs", "The fs could not be added to the VM")
        self.log.write(
            "ERROR", "vmm", "add_failed", f"Error when adding new fs to the VM: {fail.vm}"
        )
        return fail

    def _remove_device(self, body: bytes) -> tuple[int, None] | ApiFail:
        try:
            data = orjson.loads(body)
            device_id = data["id"]
            if not isinstance(device_id, str):
                raise TypeError("id must be a string")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            return bad_request("SerdeJsonDeserialize", str(exc))
        self._request_event("VmRemoveDevice", device_id)
        device = self._tree.get(device_id)
        if device is None:
            fail = unknown_device(device_id)
            text = "Error when removing device from the VM"
            if self.version < 38:
                text = "Error when removing new device to the VM"
            self.log.write("ERROR", "vmm", "remove_failed", f"{text}: {fail.vm}")
            return fail
        self._config = [c for c in self._config if c.device_id != device_id]
        device.state = "removing"
        if self.eject_delay_s is not None:
            device.eject_at = time.monotonic() + self.eject_delay_s
        return 204, None

    def _reboot(self, body: bytes) -> tuple[int, None] | ApiFail:
        self._request_event("VmReboot")
        if self._recreate():
            return 204, None
        self.running = False  # the VMM survives without a VM: vm.info says Created
        return backend_fail("VmReboot", "The VM could not reboot")

    def _named(self, config: FsConfig) -> FsConfig:
        """CH names an id-less device ``_fs<N>`` from one global counter."""
        if config.device_id is not None:
            return config
        self._names += 1
        return replace(config, device_id=f"_fs{self._names}")

    def _request_event(self, kind: str, detail: object = None) -> None:
        self.log.write("INFO", "vmm", "api", request_event(kind, detail, self.version))

    def _boot_devices(self) -> bool:
        with self._vmm:
            for wanted in self._boot:
                config = self._named(wanted)
                if self._create(config) is None:
                    self.log.raw(fatal_exit(self.version, boot=True))
                    self._exit()
                    return False
                self._config.append(config)
            return True

    def _recreate(self) -> bool:
        """A reboot: every connection closes, then devices come back from the config."""
        for device in list(self._tree.values()):
            self._stop_worker(device)
        self._tree.clear()
        return all(self._create(config) is not None for config in list(self._config))

    def _create(self, config: FsConfig) -> FsDevice | None:
        self.log.write(
            "INFO", "vmm", "creating", f"Creating virtio-fs device: {config.debug(self.version)}"
        )
        conn = self._backends.connect(config.socket, "vmm", self._stopping)
        if conn is None:
            return None
        used = {d.bdf for d in self._tree.values()}
        slot = next(s for s in range(6, 32) if f"0000:00:{s:02x}.0" not in used)
        device = FsDevice(config, f"0000:00:{slot:02x}.0", conn)
        self._tree[device.id] = device
        device.thread = threading.Thread(
            target=self._backends.watch,
            args=(device, self._worker_failed),
            name=device.id,
            daemon=True,
        )
        device.thread.start()
        return device

    def _eject_due(self) -> None:
        now = time.monotonic()
        due = [d for d in list(self._tree.values()) if d.eject_at is not None and d.eject_at <= now]
        if due and self._vmm.acquire(blocking=False):
            try:
                for device in due:
                    if self._tree.get(device.id) is device and device.state == "removing":
                        self._eject(device)
            finally:
                self._vmm.release()

    def _eject(self, device: FsDevice) -> None:
        message = f"Ejecting device_id = {device.id} on segment_id={device.config.pci_segment}"
        self.log.write("INFO", "vcpu0", "eject", message)
        self._stop_worker(device)
        del self._tree[device.id]

    def _stop_worker(self, device: FsDevice) -> None:
        device.kill.set()
        if device.thread is not None and device.thread is not threading.current_thread():
            device.thread.join(self.handshake_timeout_s + self.join_timeout_s)

    def _exit(self) -> None:
        """The VMM process ends: connections drop, the API socket file stays behind."""
        self.exited = True
        for device in list(self._tree.values()):
            self._stop_worker(device)

    def _worker_failed(self, device: FsDevice) -> None:
        """A reconnect window ran out: the device is dead (v52+: needs a reset); v26-v51
        the VMM exits with it."""
        level, where, text = worker_failed(device.id, self.version)
        self.log.write(level, device.id, where, text)
        device.state = "needs-reset" if self.version >= 52 else "dead"
        if 26 <= self.version < 52:  # the worker wrote exit_evt: the VMM shuts down
            self.log.write("INFO", "vmm", "vm_exit", "VM exit event")
            self._exit()


def _node(node_id: str, parent: str | None, children: list[str], bdf: str | None) -> dict[str, Any]:
    return {"id": node_id, "resources": [], "parent": parent, "children": children, "pci_bdf": bdf}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m healer.sim.cloud_hypervisor``: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--api-socket", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--ch-version", default="v53")
    parser.add_argument(
        "--fs", action="append", default=[], type=FsConfig.from_option, help="tag=…,socket=…[,id=…]"
    )
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--retry-interval", type=float, default=0.1)
    parser.add_argument("--eject-delay", type=float, default=0.05)
    args = parser.parse_args(argv)
    stand_in = ChStandIn(
        args.api_socket,
        args.log,
        version=args.ch_version,
        fs=args.fs,
        connect_timeout_s=args.connect_timeout,
        retry_interval_s=args.retry_interval,
        eject_delay_s=args.eject_delay,
    )
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    stand_in.start()
    try:
        while not done.wait(0.5) and not stand_in.exited:
            pass
    finally:
        stand_in.stop()
    return 1 if stand_in.exited else 0


if __name__ == "__main__":
    raise SystemExit(main())
