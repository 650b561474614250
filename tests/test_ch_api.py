"""cloud-hypervisor's API: the client, ch-remote, the re-add heal, and the stand-in.

The stand-in (healer.sim.cloud_hypervisor) plays cloud-hypervisor. A small vhost-user
backend in this file plays virtiofsd where the real one is not needed; the real
virtiofsd runs under healer.supervise on a held socket where it is. The vendored
OpenAPI spec of v53.0 (tests/contract/) checks what the client sends and what the
stand-in answers. No timing is asserted: every wait is bounded and fails the test
when the bound runs out.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from conftest import wait_for

from healer.actions.live import Daemons, LiveActions
from healer.actions.workers import ShareWorkers
from healer.config import ShareConfig, VmmConfig
from healer.engine import Decision
from healer.engine.model import Action
from healer.events import (
    ApiError,
    ApiRequest,
    BackendConnectTimeout,
    BackendDisconnected,
    BackendReconnectFailed,
    DeviceNeedsReset,
    DeviceRemoved,
    Event,
    FsDeviceCreating,
    VmmExited,
    VmRebootFailed,
    VmReset,
)
from healer.parse import SourceParser
from healer.sim import ChStandIn
from healer.supervise import (
    DaemonInfo,
    ExitStatus,
    HeldSocket,
    SupervisedVirtiofsd,
    is_listening,
)
from healer.vmm import (
    ChApiClient,
    ChApiError,
    ChError,
    ChRemote,
    ChTimeout,
    ChUnreachable,
    FsShare,
    ReaddError,
    ReaddPolicy,
    ReaddResult,
    error_messages,
    fs_config,
    readd_fs,
)
from healer.vmm.ch_api import MAX_BODY
from healer.vmm.chformat import rust_duration

CONTRACT = Path(__file__).parent / "contract"
SPEC_FILE = CONTRACT / "cloud-hypervisor-openapi-v53.yaml"
VERSIONS = ("v28", "v46", "v53")


def events(path: Path) -> list[Event]:
    parser = SourceParser(path.name, default_year=2026)
    return [e for e in parser.parse_all(path.read_bytes()) if isinstance(e, Event)]


# --- a vhost-user backend for tests that need no real virtiofsd ----------------------

_HEADER = struct.Struct("<III")


class FakeBackend:
    """Answers GET_FEATURES / GET_PROTOCOL_FEATURES on any number of connections."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.accepted = 0
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def listen(self) -> FakeBackend:
        if self.path.exists():
            self.path.unlink()
        self._stop.clear()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        self._listener.listen(8)
        self._listener.settimeout(0.05)
        self._spawn(self._accept, self._listener)
        return self

    def hang_up(self) -> None:
        """Stop listening and drop every client; the socket file stays (ECONNREFUSED)."""
        self._stop.set()
        for conn in self._conns:
            conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5.0)
            assert not thread.is_alive()
        self._threads.clear()
        for conn in self._conns:
            conn.close()
        self._conns.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _spawn(self, target: Callable[[socket.socket], None], sock: socket.socket) -> None:
        thread = threading.Thread(target=target, args=(sock,), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self._conns.append(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        with_buffer = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            with_buffer += chunk
            while len(with_buffer) >= _HEADER.size:
                request, _flags, size = _HEADER.unpack_from(with_buffer)
                if len(with_buffer) < _HEADER.size + size:
                    break
                with_buffer = with_buffer[_HEADER.size + size :]
                if request in (1, 15):  # GET_FEATURES (offers protocol features), GET_PROTOCOL_
                    value = 1 << 30 if request == 1 else 0
                    conn.sendall(_HEADER.pack(request, 0x5, 8) + struct.pack("<Q", value))


@pytest.fixture
def backend(short_dir: Path) -> Iterator[FakeBackend]:
    fake = FakeBackend(short_dir / "fs.sock").listen()
    yield fake
    fake.hang_up()


@pytest.fixture
def make_ch(short_dir: Path) -> Iterator[Callable[..., ChStandIn]]:
    made: list[ChStandIn] = []

    def make(version: str = "v53", **options: Any) -> ChStandIn:
        n = len(made)
        stand_in = ChStandIn(
            short_dir / f"api{n}.sock", short_dir / f"ch{n}.log", version=version, **options
        )
        made.append(stand_in.start())
        return stand_in

    yield make
    for stand_in in made:
        stand_in.stop()


def client_of(stand_in: ChStandIn, timeout_s: float = 20.0) -> ChApiClient:
    return ChApiClient(str(stand_in.api_socket), timeout_s=timeout_s)


def add(client: ChApiClient, path: Path, device_id: str = "myfs0") -> dict[str, Any]:
    return client.add_fs(tag="myfs", socket=str(path), device_id=device_id)


# --- error bodies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "messages"),
    [
        (
            b'["Error from API","The fs could not be added to the VM"]',
            ("Error from API", "The fs could not be added to the VM"),
        ),
        (
            b"Error from device manager: CreateVirtioFs(VhostUserConnect)",
            ("Error from device manager: CreateVirtioFs(VhostUserConnect)",),
        ),
        (
            b"ApiError(VmAddFs(DeviceManager(CreateVirtioFs(VhostUserConnect))))",
            ("ApiError(VmAddFs(DeviceManager(CreateVirtioFs(VhostUserConnect))))",),
        ),
        (b"", ()),
        (b"  \r\n", ()),
        (b"[not json", ("[not json",)),
        (b"[1, 2]", ("[1, 2]",)),
    ],
)
def test_every_error_body_shape_gives_messages(body: bytes, messages: tuple[str, ...]) -> None:
    assert error_messages(body) == messages


def test_the_predicates_match_every_version_of_the_texts() -> None:
    clash = [
        ChApiError(500, ('ApiError(VmAddFs(DeviceManager(IdentifierNotUnique("a"))))',), ""),
        ChApiError(
            500, ("Error from device manager", "Invalid identifier as it is not unique: a"), ""
        ),
        ChApiError(409, ("Failed to validate config", "Identifier a is not unique"), ""),
    ]
    assert all(e.not_unique and not e.backend_unreachable for e in clash)
    assert ChApiError(500, ("Connection to socket failed",), "").backend_unreachable
    assert ChApiError(
        500, (), "ApiError(VmAddFs(DeviceManager(CreateVirtioFs(VhostUserConnect))))"
    ).backend_unreachable
    assert ChApiError(
        404, ("Failed to find device corresponding to the given identifier",), ""
    ).no_such_device


def test_rust_duration_debug_forms() -> None:
    assert rust_duration(81_565_705) == "81.565705ms"
    assert rust_duration(10_301_501_007) == "10.301501007s"
    assert rust_duration(186_000) == "186µs"
    assert rust_duration(858_465_660, 6) == "858.465660ms"


# --- the client against the stand-in -------------------------------------------------


def test_add_info_remove_and_ping(make_ch: Callable[..., ChStandIn], backend: FakeBackend) -> None:
    stand_in = make_ch(eject_delay_s=None)
    client = client_of(stand_in)
    assert client.ping()["version"] == "v53.0"
    assert add(client, backend.path) == {"id": "myfs0", "bdf": "0000:00:06.0"}
    info = client.info()
    assert info["state"] == "Running"
    assert [(f["id"], f["tag"], f["socket"]) for f in info["config"]["fs"]] == [
        ("myfs0", "myfs", str(backend.path))
    ]
    assert info["device_tree"]["_virtio-pci-myfs0"]["pci_bdf"] == "0000:00:06.0"
    client.remove_device("myfs0")
    info = client.info()
    assert info["config"]["fs"] is None
    assert "myfs0" in info["device_tree"]  # 204, but not ejected yet (#8763)
    assert stand_in.eject("myfs0")
    assert "myfs0" not in client.info()["device_tree"]
    assert stand_in.api_socket.stat().st_mode & 0o777 == 0o600
    assert stand_in.stats.connects == 1


def test_the_add_fs_body_is_checked_before_it_is_sent() -> None:
    assert fs_config(tag="t" * 36, socket="/s", device_id="d")["tag"] == "t" * 36
    with pytest.raises(ValueError, match="36 bytes"):
        fs_config(tag="t" * 37, socket="/s", device_id="d")
    with pytest.raises(ValueError, match="explicit device id"):
        fs_config(tag="t", socket="/s", device_id="")
    with pytest.raises(ValueError, match="positive"):
        ChApiClient("/s", timeout_s=0)


def test_a_cold_add_answers_204_and_an_empty_dict(
    make_ch: Callable[..., ChStandIn], backend: FakeBackend
) -> None:
    stand_in = make_ch(running=False)
    assert add(client_of(stand_in), backend.path) == {}
    assert stand_in.stats.connects == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_each_error_shape_and_status(
    version: str, make_ch: Callable[..., ChStandIn], backend: FakeBackend
) -> None:
    stand_in = make_ch(version, connect_timeout_s=0.3, eject_delay_s=None)
    client = client_of(stand_in)
    add(client, backend.path)
    with pytest.raises(ChApiError) as config_clash:
        add(client, backend.path)
    client.remove_device("myfs0")
    with pytest.raises(ChApiError) as tree_clash:
        add(client, backend.path)
    with pytest.raises(ChApiError) as unknown:
        client.remove_device("nothing")
    with pytest.raises(ChApiError) as unreachable:
        client.add_fs(tag="t", socket=str(backend.path.with_name("none.sock")), device_id="t0")
    assert config_clash.value.not_unique
    assert tree_clash.value.not_unique
    assert unknown.value.no_such_device
    assert unreachable.value.backend_unreachable
    statuses = [e.value.status for e in (config_clash, tree_clash, unknown, unreachable)]
    raw = tree_clash.value.raw_body
    if version == "v28":
        assert statuses == [500, 500, 500, 500]
        assert raw == 'ApiError(VmAddFs(DeviceManager(IdentifierNotUnique("myfs0"))))'
    elif version == "v46":
        assert statuses == [500, 500, 500, 500]
        assert raw == 'Error from device manager: IdentifierNotUnique("myfs0")'
    else:
        assert statuses == [409, 500, 404, 500]
        assert orjson.loads(raw) == list(tree_clash.value.messages)
        assert tree_clash.value.messages[-1] == "Invalid identifier as it is not unique: myfs0"


def test_an_empty_error_body_and_a_bad_request(make_ch: Callable[..., ChStandIn]) -> None:
    client = client_of(make_ch("v28"))
    with pytest.raises(ChApiError) as unknown_path:
        client.request("GET", "vm.nothing")
    assert (unknown_path.value.status, unknown_path.value.messages) == (404, ())
    with pytest.raises(ChApiError) as body_on_reboot:
        client.request("PUT", "vm.reboot", {})
    assert (body_on_reboot.value.status, body_on_reboot.value.messages) == (400, ("BadRequest",))
    client.reboot()  # no body at all: accepted


def test_a_missing_socket_and_a_dead_vmm_are_unreachable(short_dir: Path) -> None:
    with pytest.raises(ChUnreachable) as missing:
        ChApiClient(str(short_dir / "none.sock"), timeout_s=2).ping()
    assert missing.value.errno == 2
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(short_dir / "dead.sock"))  # bound, never listening: what a dead CH leaves
    try:
        with pytest.raises(ChUnreachable) as refused:
            ChApiClient(str(short_dir / "dead.sock"), timeout_s=2).info()
    finally:
        stale.close()
    assert refused.value.errno == 111
    assert isinstance(refused.value, ChError)


def test_a_stalled_api_raises_a_timeout_not_a_hang(
    make_ch: Callable[..., ChStandIn], backend: FakeBackend
) -> None:
    stand_in = make_ch()
    client = client_of(stand_in)
    with stand_in.hold_vmm():  # what a 60 s connect loop does to the VMM thread
        with pytest.raises(ChTimeout):
            client.ping(timeout_s=0.2)
        with pytest.raises(ChTimeout):
            client.add_fs(tag="myfs", socket=str(backend.path), device_id="myfs0", timeout_s=0.2)
    # The queued requests still run: an add that timed out on the client side may
    # have happened all the same, so a healer must look before adding again.
    assert "myfs0" in client.info()["device_tree"]


def test_the_connect_loop_stalls_the_api_then_fails_the_add(
    make_ch: Callable[..., ChStandIn], short_dir: Path
) -> None:
    stand_in = make_ch(connect_timeout_s=3.0)
    client = client_of(stand_in)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(short_dir / "dead.sock"))  # a stale virtiofsd socket: ECONNREFUSED
    failures: list[BaseException] = []

    def add_in_background() -> None:
        try:
            client.add_fs(tag="t", socket=str(short_dir / "dead.sock"), device_id="t0")
        except ChError as exc:
            failures.append(exc)

    adder = threading.Thread(target=add_in_background)
    adder.start()
    try:
        wait_for(lambda: stand_in.stats.refused > 0)
        with pytest.raises(ChTimeout):
            client.ping(timeout_s=0.2)
        adder.join(20.0)
        assert not adder.is_alive()
    finally:
        dead.close()
    assert len(failures) == 1
    assert isinstance(failures[0], ChApiError)
    assert failures[0].backend_unreachable
    timeout = [e for e in events(stand_in.log_path) if isinstance(e, BackendConnectTimeout)]
    assert [(e.socket, e.errno) for e in timeout] == [(str(short_dir / "dead.sock"), 111)]


# --- the stand-in's log, read by healer's own parser ---------------------------------

_TIMEOUT_LINE = (
    r"cloud-hypervisor: +\d+\.\d{6}s: <myfs0> ERROR:virtio-devices/src/vhost_user/vu_common_ctrl.rs:462 -- "
    r"Failed connecting the backend after trying for 1 minute for socket {path}: "
    r'VhostUserProtocol\(SocketConnect\(Os \{ code: 111, kind: ConnectionRefused, message: "Connection refused" \}\)\)\r\n'
)


def in_order(found: list[Event], wanted: list[tuple[type[Event], dict[str, Any]]]) -> bool:
    """Whether ``wanted`` (kind and field values) occurs in ``found`` as a subsequence."""
    it = iter(found)
    return all(
        any(isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items()) for e in it)
        for kind, fields in wanted
    )


def test_v53_lines_become_the_expected_events(
    make_ch: Callable[..., ChStandIn], backend: FakeBackend
) -> None:
    stand_in = make_ch("v53", connect_timeout_s=0.5, retry_interval_s=0.05)
    client = client_of(stand_in)
    path = str(backend.path)
    add(client, backend.path)
    backend.hang_up()  # virtiofsd died and nobody respawned it: the socket file stays
    wait_for(lambda: "NEEDS_RESET" in stand_in.log_path.read_text())
    backend.listen()
    result = readd_fs(client, FsShare(tag="myfs"), is_ready=lambda: True)
    assert result.steps == ("remove", "gone", "ready", "add")
    assert stand_in.guest_reboot()
    with pytest.raises(ChApiError):
        client.remove_device("nothing")
    found = events(stand_in.log_path)
    assert in_order(
        found,
        [
            (ApiRequest, {"request": "VmAddFs"}),
            (
                FsDeviceCreating,
                {"tag": "myfs", "socket": path, "device_id": "myfs0", "queue_size": 1024},
            ),
            (BackendDisconnected, {"socket": path}),
            (BackendConnectTimeout, {"socket": path, "errno": 111}),
            (ApiRequest, {"request": "VmRemoveDevice"}),
            (DeviceRemoved, {"device_id": "myfs0"}),
            (FsDeviceCreating, {"device_id": "myfs0"}),
            (VmReset, {"trigger": "VM reset event"}),
            (FsDeviceCreating, {"device_id": "myfs0"}),
            (ApiError, {}),
        ],
    ), [type(e).__name__ for e in found]
    text = stand_in.log_path.read_bytes().decode()  # read_text() would fold the \r\n
    assert re.search(_TIMEOUT_LINE.replace("{path}", re.escape(path)), text)
    assert all(line.endswith("\r") for line in text.split("\n")[:-1])
    assert stand_in.stats.refused > 0  # no held socket here: CH meets ECONNREFUSED


def test_a_v53_needs_reset_line_is_read_as_device_needs_reset(
    make_ch: Callable[..., ChStandIn], backend: FakeBackend
) -> None:
    stand_in = make_ch("v53", connect_timeout_s=0.3, retry_interval_s=0.05)
    add(client_of(stand_in), backend.path)
    backend.hang_up()
    wait_for(lambda: "NEEDS_RESET" in stand_in.log_path.read_text())
    (line,) = [x for x in stand_in.log_path.read_text().splitlines() if "NEEDS_RESET" in x]
    (event,) = events(stand_in.log_path)[-1:]
    assert "worker exited with error: HandleEvent(failed to reconnect vhost-user backend" in line
    assert isinstance(event, DeviceNeedsReset), type(event).__name__


def test_v28_a_failed_reconnect_takes_the_vmm_down(
    make_ch: Callable[..., ChStandIn], backend: FakeBackend
) -> None:
    stand_in = make_ch("v28", connect_timeout_s=0.3, retry_interval_s=0.05)
    client = client_of(stand_in)
    add(client, backend.path)
    backend.hang_up()
    wait_for(lambda: stand_in.exited and not stand_in.serving)
    with pytest.raises(ChUnreachable) as dead:  # the API socket file stays behind
        client.ping(timeout_s=2)
    assert dead.value.errno == 111
    found = events(stand_in.log_path)
    assert not any(isinstance(e, BackendDisconnected) for e in found)  # v52+ only
    assert in_order(
        found,
        [
            (FsDeviceCreating, {"device_id": "myfs0", "socket": str(backend.path)}),
            (BackendConnectTimeout, {"socket": None, "errno": 111}),
            (BackendReconnectFailed, {}),
            (VmmExited, {"reason": "VM exit event"}),
        ],
    ), [type(e).__name__ for e in found]
    text = stand_in.log_path.read_bytes().decode()
    assert re.match(
        r"cloud-hypervisor: \d+(\.\d+)?(s|ms|µs): <vmm> INFO:vmm/src/lib\.rs:1752 -- ", text
    )
    assert "\r" not in text


def test_a_worker_line_names_a_user_given_device(
    make_ch: Callable[..., ChStandIn], backend: FakeBackend
) -> None:
    stand_in = make_ch("v28", connect_timeout_s=0.3, retry_interval_s=0.05)
    add(client_of(stand_in), backend.path)
    backend.hang_up()
    wait_for(lambda: stand_in.exited)
    (failed,) = [e for e in events(stand_in.log_path) if isinstance(e, BackendReconnectFailed)]
    assert failed.origin.thread == "myfs0"
    assert failed.device_id == "myfs0"


@pytest.mark.parametrize("version", ["v46", "v53"])
def test_a_reboot_that_cannot_connect(
    version: str, make_ch: Callable[..., ChStandIn], backend: FakeBackend
) -> None:
    stand_in = make_ch(version, connect_timeout_s=0.3, retry_interval_s=0.05)
    client = client_of(stand_in)
    add(client, backend.path)
    backend.hang_up()
    with pytest.raises(ChApiError) as api_reboot:  # API reboot: the VMM survives, no VM
        client.reboot()
    assert api_reboot.value.backend_unreachable
    assert client.info()["state"] == "Created"
    assert not stand_in.guest_reboot()  # a guest reset: the VMM thread ends
    assert stand_in.exited
    found = events(stand_in.log_path)
    if version == "v46":  # "VMM thread exited with error: Error rebooting VM: ..."
        assert [e.vmm_exited for e in found if isinstance(e, VmRebootFailed)] == [True]
    else:  # the v48+ chain of errors
        assert [e.causes[0] for e in found if isinstance(e, VmmExited)] == ["Error rebooting VM"]


def test_the_stand_in_runs_as_a_program_for_rehearsal(
    short_dir: Path, backend: FakeBackend
) -> None:
    api, log = short_dir / "cli.sock", short_dir / "cli.log"
    argv = [sys.executable, "-m", "healer.sim.cloud_hypervisor", "--api-socket", str(api)]
    argv += ["--log", str(log), "--fs", f"tag=myfs,socket={backend.path},id=myfs0"]
    program = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(api.exists)
        info = ChApiClient(str(api), timeout_s=10).info()
        assert [f["id"] for f in info["config"]["fs"]] == ["myfs0"]
        program.send_signal(signal.SIGTERM)
        _, stderr = program.communicate(timeout=15)
    finally:
        if program.poll() is None:
            program.kill()
            program.communicate(timeout=15)
    assert (program.returncode, stderr) == (0, b"")
    assert not api.exists()
    assert any(isinstance(e, FsDeviceCreating) for e in events(log))


# --- ch-remote ------------------------------------------------------------------------

FAKE_CH_REMOTE = r"""
import json
import sys
import time

args = sys.argv[1:]
scenario = args[args.index("--scenario") + 1]
command = args[args.index("--api-socket") + 2 :]
with open(args[args.index("--record") + 1], "a") as record:
    record.write(json.dumps(command) + "\n")
CHAIN = "Error: ch-remote exited with the following chain of errors:\n  0: http client error\n"
DEBUG = "\nDebug Info: HttpApiClient(ServerResponse(InternalServerError, Some(\"[\\\"Error from API\\\"]\")))"
OUT = {
    "v28-refused": "Error running command: Error opening HTTP socket: Connection refused (os error 111)",
    # ch-remote on main logs this through env_logger (error!(...), derived from its source)
    "v53-refused": "[2026-08-01T10:00:00Z ERROR ch_remote] Error opening HTTP socket: Connection refused (os error 111)",
    "v28-error": "Error running command: Server responded with an error: InternalServerError: "
    "ApiError(VmAddFs(DeviceManager(CreateVirtioFs(VhostUserConnect))))",
    "v46-error": "Error running command: Server responded with an error: InternalServerError: "
    "Error from device manager: CreateVirtioFs(VhostUserConnect)",
    "v53-error": CHAIN + "  1: Server responded with InternalServerError\n  2: Error from API\n"
    "  3: The fs could not be added to the VM\n  4: Error from device manager\n"
    "  5: Invalid identifier as it is not unique: myfs0\n" + DEBUG,
    "v53-conflict": CHAIN + "  1: Server responded with Unknown\n  2: Error from API\n"
    "  3: The fs could not be added to the VM\n  4: Failed to validate config\n"
    "  5: Identifier myfs0 is not unique\n",
    "v53-broken": CHAIN + "  X: Can't get remote's error messages from JSON response: "
    "EOF while parsing a value at line 1 column 0: body=''\n\n"
    "Debug Info: HttpApiClient(ServerResponse(InternalServerError, Some(\"\")))",
}
if scenario == "hang":
    time.sleep(30)
elif scenario in OUT:
    sys.stderr.write(OUT[scenario] + "\n")
    sys.exit(1)
elif scenario == "garbage":
    print("not json")
elif scenario == "flood":  # a JSON object of 3 MiB: valid, and over the limit
    sys.stdout.write('{"config": {"fs": [], "pad": "' + "x" * (3 << 20) + '"}}\n')
else:
    answers = {
        "ping": {"version": "v53.0"},
        "info": {"config": {"fs": None}, "state": "Running"},
        "add-fs": {"id": "myfs0", "bdf": "0000:00:06.0"},
    }
    if command[0] in answers:
        print(json.dumps(answers[command[0]], separators=(",", ":")))
"""


@pytest.fixture
def fake_ch_remote(short_dir: Path) -> Callable[..., tuple[ChRemote, Path]]:
    script = short_dir / "ch-remote"
    script.write_text(FAKE_CH_REMOTE)
    script.chmod(0o700)

    def make(scenario: str, timeout_s: float = 20.0) -> tuple[ChRemote, Path]:
        record = short_dir / f"{scenario}.argv"
        prefix = [sys.executable, str(script), "--scenario", scenario, "--record", str(record)]
        return ChRemote([*prefix, "--api-socket", "/run/ch.sock"], timeout_s=timeout_s), record

    return make


def test_ch_remote_success_and_the_argv_it_gets(
    fake_ch_remote: Callable[..., tuple[ChRemote, Path]],
) -> None:
    remote, record = fake_ch_remote("ok")
    assert remote.ping() == {"version": "v53.0"}
    assert remote.info()["state"] == "Running"
    assert remote.add_fs(tag="myfs", socket="/run/fs.sock", device_id="myfs0") == {
        "id": "myfs0",
        "bdf": "0000:00:06.0",
    }
    remote.remove_device("myfs0")
    argvs = [orjson.loads(line) for line in record.read_text().splitlines()]
    assert argvs == [
        ["ping"],
        ["info"],
        ["add-fs", "tag=myfs,socket=/run/fs.sock,num_queues=1,queue_size=1024,id=myfs0"],
        ["remove-device", "myfs0"],
    ]
    with pytest.raises(ValueError, match="cannot carry"):
        remote.add_fs(tag="myfs", socket="/run/a,b.sock", device_id="myfs0")


@pytest.mark.parametrize(
    ("scenario", "kind", "status", "predicate"),
    [
        ("v28-refused", ChUnreachable, None, None),
        ("v53-refused", ChUnreachable, None, None),
        ("v28-error", ChApiError, 500, "backend_unreachable"),
        ("v46-error", ChApiError, 500, "backend_unreachable"),
        ("v53-error", ChApiError, 500, "not_unique"),
        ("v53-conflict", ChApiError, None, "not_unique"),
        ("v53-broken", ChApiError, 500, None),
        ("garbage", ChError, None, None),
    ],
)
def test_ch_remote_output_forms(
    scenario: str,
    kind: type[ChError],
    status: int | None,
    predicate: str | None,
    fake_ch_remote: Callable[..., tuple[ChRemote, Path]],
) -> None:
    remote, _ = fake_ch_remote(scenario)
    with pytest.raises(ChError) as caught:
        remote.add_fs(tag="myfs", socket="/run/fs.sock", device_id="myfs0")
    assert type(caught.value) is kind
    if isinstance(caught.value, ChUnreachable):
        assert caught.value.errno == 111
    if isinstance(caught.value, ChApiError):
        assert caught.value.status == status
        assert predicate is None or getattr(caught.value, predicate)
    if scenario == "v53-error":
        assert isinstance(caught.value, ChApiError)
        assert caught.value.messages[0] == "Error from API"
    if scenario == "v53-broken":
        assert isinstance(caught.value, ChApiError)
        assert caught.value.messages == ()


def test_a_ch_remote_printing_more_than_the_limit_is_an_error_not_kept_whole(
    fake_ch_remote: Callable[..., tuple[ChRemote, Path]],
) -> None:
    remote, _ = fake_ch_remote("flood")
    with pytest.raises(ChError, match="printed more than 1048576 bytes"):
        remote.info()


def test_a_hanging_ch_remote_times_out(
    fake_ch_remote: Callable[..., tuple[ChRemote, Path]],
) -> None:
    remote, _ = fake_ch_remote("hang", timeout_s=0.5)
    with pytest.raises(ChTimeout):
        remote.ping()


# --- the re-add sequence --------------------------------------------------------------

FAST = ReaddPolicy(gone_every_s=0.01, ready_every_s=0.01, add_every_s=0.01, add_attempts=2000)


@pytest.mark.parametrize("version", ["v28", "v53"])
def test_readd_waits_for_the_eject(
    version: str, make_ch: Callable[..., ChStandIn], backend: FakeBackend
) -> None:
    stand_in = make_ch(version, eject_delay_s=0.2)
    client = client_of(stand_in)
    add(client, backend.path)
    result = readd_fs(client, FsShare(device_id="myfs0"), is_ready=lambda: True, policy=FAST)
    assert result.steps == ("remove", "gone", "ready", "add")
    assert result.device == {"id": "myfs0", "bdf": "0000:00:06.0"}
    assert result.info_polls >= 1
    assert result.add_attempts == 1  # the tree said gone, so the id was free
    assert stand_in.stats.connects == 2
    assert not any(status for _, status, _ in stand_in.api_errors)


@pytest.mark.parametrize("version", ["v28", "v53"])
def test_readd_retries_identifier_not_unique(
    version: str, make_ch: Callable[..., ChStandIn], backend: FakeBackend
) -> None:
    # Without device_tree in vm.info (as before v0.12) "gone" is read from config.fs,
    # which CH empties at once; the id stays taken until the guest ejects.
    stand_in = make_ch(version, eject_delay_s=None, device_tree_in_info=False)
    client = client_of(stand_in)
    add(client, backend.path)
    results: list[ReaddResult] = []
    worker = threading.Thread(
        target=lambda: results.append(
            readd_fs(client, FsShare(tag="myfs"), is_ready=lambda: True, policy=FAST)
        )
    )
    worker.start()
    wait_for(lambda: any(endpoint == "vm.add-fs" for endpoint, _, _ in stand_in.api_errors))
    assert stand_in.eject("myfs0")  # the guest acknowledges
    worker.join(20.0)
    assert not worker.is_alive()
    (result,) = results
    assert result.steps == ("remove", "gone", "ready", "add")
    assert result.add_attempts >= 2
    status = 500
    assert {(e, s) for e, s, _ in stand_in.api_errors} == {("vm.add-fs", status)}


def test_readd_gives_up_when_the_device_never_goes(
    make_ch: Callable[..., ChStandIn], backend: FakeBackend
) -> None:
    stand_in = make_ch(eject_delay_s=None)  # issue #8763: removal never completes
    client = client_of(stand_in)
    add(client, backend.path)
    policy = ReaddPolicy(gone_attempts=3, gone_every_s=0.01)
    with pytest.raises(ReaddError) as stuck:
        readd_fs(client, FsShare(device_id="myfs0"), is_ready=lambda: True, policy=policy)
    assert (stuck.value.step, stuck.value.steps) == ("gone", ("remove",))


def test_readd_surfaces_a_stalled_api_as_a_timeout(
    make_ch: Callable[..., ChStandIn], backend: FakeBackend
) -> None:
    stand_in = make_ch()
    add(client_of(stand_in), backend.path)
    with stand_in.hold_vmm(), pytest.raises(ChTimeout):
        readd_fs(client_of(stand_in, timeout_s=0.2), FsShare(tag="myfs"), is_ready=lambda: True)


class FakeVmm:
    """An API that lists one fs device and answers add-fs with a fixed outcome."""

    def __init__(
        self, add_error: ChApiError | None = None, remove_error: ChApiError | None = None
    ) -> None:
        self.add_error = add_error
        self.remove_error = remove_error
        self.calls: list[str] = []
        self.fs = [
            {
                "tag": "myfs",
                "socket": "/run/fs.sock",
                "num_queues": 2,
                "queue_size": 512,
                "id": "_fs3",
            }
        ]

    def info(self) -> dict[str, Any]:
        self.calls.append("info")
        return {"config": {"fs": self.fs}, "state": "Running"}

    def remove_device(self, device_id: str) -> None:
        self.calls.append(f"remove {device_id}")
        self.fs = []
        if self.remove_error is not None:
            raise self.remove_error

    def add_fs(
        self, *, tag: str, socket: str, device_id: str, num_queues: int = 1, queue_size: int = 1024
    ) -> dict[str, Any]:
        self.calls.append(f"add {tag} {socket} {device_id} {num_queues} {queue_size}")
        if self.add_error is not None:
            raise self.add_error
        return {"id": device_id, "bdf": "0000:00:07.0"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_readd_keeps_the_vmm_config_and_its_generated_id() -> None:
    vmm = FakeVmm(
        remove_error=ChApiError(
            404, ("Failed to find device corresponding to the given identifier",), ""
        )
    )
    clock = FakeClock()
    result = readd_fs(
        vmm, FsShare(socket="/run/fs.sock"), is_ready=lambda: True, sleep=clock.sleep, clock=clock
    )
    assert result.steps == ("already-gone", "gone", "ready", "add")
    assert vmm.calls == ["info", "remove _fs3", "info", "add myfs /run/fs.sock _fs3 2 512"]
    assert clock.sleeps == []


@pytest.mark.parametrize(("attempts", "limit_s", "checks"), [(3, 100.0, 3), (1000, 1.0, 5)])
def test_the_ready_wait_is_bounded_by_attempts_and_by_time(
    attempts: int, limit_s: float, checks: int
) -> None:
    vmm = FakeVmm()
    clock = FakeClock()
    calls: list[float] = []
    policy = ReaddPolicy(ready_attempts=attempts, ready_limit_s=limit_s, ready_every_s=0.25)

    def never() -> bool:
        calls.append(clock.now)
        return False

    with pytest.raises(ReaddError) as late:
        readd_fs(
            vmm, FsShare(tag="myfs"), is_ready=never, policy=policy, sleep=clock.sleep, clock=clock
        )
    assert late.value.step == "ready"
    assert len(calls) == checks
    assert set(clock.sleeps) == {0.25}
    assert not any(c.startswith("add") for c in vmm.calls)


def test_a_clash_that_persists_is_bounded_and_other_errors_pass_through() -> None:
    clock = FakeClock()
    clash = ChApiError(500, ("Invalid identifier as it is not unique: _fs3",), "")
    vmm = FakeVmm(add_error=clash)
    policy = ReaddPolicy(add_attempts=4, add_every_s=0.5)
    with pytest.raises(ReaddError) as taken:
        readd_fs(
            vmm,
            FsShare(tag="myfs"),
            is_ready=lambda: True,
            policy=policy,
            sleep=clock.sleep,
            clock=clock,
        )
    assert taken.value.step == "add"
    assert taken.value.__cause__ is clash
    assert sum(c.startswith("add") for c in vmm.calls) == 4
    refused = ChApiError(500, ("Connection to socket failed",), "")
    with pytest.raises(ChApiError) as backend_down:
        readd_fs(
            FakeVmm(add_error=refused),
            FsShare(tag="myfs"),
            is_ready=lambda: True,
            sleep=clock.sleep,
            clock=clock,
        )
    assert backend_down.value is refused


def test_nothing_to_readd_is_an_error() -> None:
    with pytest.raises(ReaddError) as nothing:
        readd_fs(FakeVmm(), FsShare(tag="other"), is_ready=lambda: True)
    assert nothing.value.step == "find"
    vmm = FakeVmm()
    vmm.fs = []
    result = readd_fs(vmm, FsShare(tag="t", socket="/s", device_id="t0"), is_ready=lambda: True)
    assert result.steps == ("absent", "ready", "add")


# --- the stand-in against the real virtiofsd on a held socket -------------------------


class Respawner:
    """The supervisor's job in miniature: start virtiofsd again whenever it exits."""

    def __init__(self, daemon: SupervisedVirtiofsd) -> None:
        self.daemon = daemon
        self.exits: list[ExitStatus] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Respawner:
        self.daemon.start()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            status = self.daemon.poll()
            if status is not None:
                self.exits.append(status)
                self.daemon.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        assert not self._thread.is_alive()
        self.daemon.stop()


@pytest.fixture
def served(virtiofsd: DaemonInfo, short_dir: Path) -> Iterator[tuple[HeldSocket, Respawner]]:
    share = short_dir / "shared"
    share.mkdir()
    (share / "hello.txt").write_text("hello\n")
    held = HeldSocket(short_dir / "vfs.sock")
    respawner = Respawner(SupervisedVirtiofsd(virtiofsd.argv(shared_dir=str(share)), held))
    yield held, respawner.start()
    respawner.stop()
    held.close()


def test_a_killed_virtiofsd_is_reconnected_with_no_refusal(
    served: tuple[HeldSocket, Respawner], make_ch: Callable[..., ChStandIn]
) -> None:
    held, respawner = served
    stand_in = make_ch(connect_timeout_s=10.0, handshake_timeout_s=10.0)
    client = client_of(stand_in)
    assert add(client, held.path)["id"] == "myfs0"
    first = respawner.daemon.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: stand_in.stats.connects >= 2)
    assert [e.signal for e in respawner.exits] == ["SIGKILL"]
    assert respawner.daemon.pid != first
    stats = stand_in.stats
    assert (stats.refused, stats.not_found, stats.timeouts, stats.disconnects) == (0, 0, 0, 1)
    found = events(stand_in.log_path)
    assert [e.socket for e in found if isinstance(e, BackendDisconnected)] == [str(held.path)]
    assert not any(isinstance(e, BackendConnectTimeout | DeviceNeedsReset) for e in found)
    assert "myfs0" in client.info()["device_tree"]


def test_reboots_reconnect_to_the_respawned_virtiofsd(
    served: tuple[HeldSocket, Respawner], make_ch: Callable[..., ChStandIn]
) -> None:
    held, respawner = served
    stand_in = make_ch(connect_timeout_s=10.0, handshake_timeout_s=10.0)
    client = client_of(stand_in)
    add(client, held.path)
    assert stand_in.guest_reboot()  # closes the connection: virtiofsd exits 0
    client.reboot()  # the same through the API
    assert stand_in.stats.connects == 3
    wait_for(lambda: len(respawner.exits) == 2)
    assert [(e.code, e.signal) for e in respawner.exits] == [(0, None), (0, None)]
    assert stand_in.stats.refused == 0
    found = events(stand_in.log_path)
    assert sum(isinstance(e, VmReset) for e in found) == 1
    assert sum(isinstance(e, FsDeviceCreating) for e in found) == 3


def test_readd_with_the_real_virtiofsd(
    served: tuple[HeldSocket, Respawner], make_ch: Callable[..., ChStandIn]
) -> None:
    held, respawner = served
    stand_in = make_ch(connect_timeout_s=10.0, handshake_timeout_s=10.0, eject_delay_s=0.1)
    client = client_of(stand_in)
    add(client, held.path)
    result = readd_fs(
        client, FsShare(tag="myfs"), is_ready=lambda: is_listening(held.path), policy=FAST
    )
    assert result.steps == ("remove", "gone", "ready", "add")
    assert stand_in.stats.connects == 2
    assert stand_in.stats.refused == 0
    wait_for(lambda: len(respawner.exits) == 1)  # the eject closed the first connection
    assert respawner.exits[0].code == 0


# --- the contract: the vendored OpenAPI spec of v53.0 ---------------------------------
#
# PyYAML is not a dependency. The reader below handles the YAML subset the spec is
# written in (block mappings and sequences, "- key: value" items, [a, b] flow lists of
# scalars, quoted and plain scalars, multi-line plain scalars, | and > block scalars,
# comments) and raises on anything else (anchors, aliases, tags, flow mappings,
# several documents), so a spec it cannot read fails loudly instead of being misread.

_KEY = re.compile(r"""^("[^"]*"|'[^']*'|[^\s#'"\-{\[][^:]*?|-[^\s:][^:]*?):(?:\s+(.*))?$""")


class SpecReader:
    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.i = 0

    def read(self) -> Any:
        peek = self.peek()
        if peek is None:
            raise ValueError("empty document")
        value = self.block(peek[0])
        if self.peek() is not None:
            raise ValueError(f"line {self.i + 1}: unexpected indentation")
        return value

    def peek(self) -> tuple[int, str] | None:
        while self.i < len(self.lines):
            line = self.lines[self.i]
            text = line.strip()
            if text and not text.startswith("#"):
                if text in ("---", "...") or "\t" in line[: len(line) - len(line.lstrip())]:
                    raise ValueError(f"line {self.i + 1}: unsupported YAML: {text}")
                return len(line) - len(line.lstrip(" ")), text
            self.i += 1
        return None

    def block(self, indent: int) -> Any:
        peek = self.peek()
        assert peek is not None
        if peek[1] == "-" or peek[1].startswith("- "):
            return self.sequence(indent)
        return self.mapping(indent)

    def mapping(self, indent: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while (
            (peek := self.peek()) is not None and peek[0] == indent and not peek[1].startswith("- ")
        ):
            m = _KEY.match(peek[1])
            if m is None:
                raise ValueError(f"line {self.i + 1}: not a mapping entry: {peek[1]}")
            key = m.group(1).strip("\"'")
            if key in out:
                raise ValueError(f"line {self.i + 1}: duplicate key {key}")
            self.i += 1
            out[key] = self.value(m.group(2) or "", indent)
        return out

    def sequence(self, indent: int) -> list[Any]:
        out: list[Any] = []
        while (peek := self.peek()) is not None and peek[0] == indent and peek[1].startswith("- "):
            item = peek[1][2:].strip()
            if _KEY.match(item):  # "- key: value" opens a mapping two columns in
                self.lines[self.i] = " " * (indent + 2) + item
                out.append(self.mapping(indent + 2))
            else:
                self.i += 1
                out.append(scalar(item))
        return out

    def value(self, rest: str, indent: int) -> Any:
        if rest in ("|", ">", "|-", ">-"):
            return self.text(indent, "\n" if rest[0] == "|" else " ")
        if rest:
            return scalar(rest)
        peek = self.peek()
        if peek is None:
            return None
        listed_here = peek[0] == indent and peek[1].startswith("- ")  # "key:\n- item"
        if peek[0] <= indent and not listed_here:
            return None
        if peek[1].startswith("- ") or _KEY.match(peek[1]):
            return self.block(peek[0])
        return self.text(indent, " ")  # a multi-line plain scalar

    def text(self, indent: int, joiner: str) -> str:
        parts = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip() and len(line) - len(line.lstrip(" ")) <= indent:
                break
            parts.append(line.strip())
            self.i += 1
        return joiner.join(parts).strip()


def scalar(text: str) -> Any:
    text = re.sub(r"\s+#.*$", "", text) if not text.startswith(("'", '"')) else text
    if text[:1] in "&*!{|>%@`":
        raise ValueError(f"unsupported YAML scalar: {text}")
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError(f"unsupported flow sequence: {text}")
        return [scalar(part.strip()) for part in text[1:-1].split(",") if part.strip()]
    if text[:1] in "\"'":
        if len(text) < 2 or text[-1] != text[0]:
            raise ValueError(f"unterminated string: {text}")
        return text[1:-1]
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return {"true": True, "false": False, "null": None, "~": None}.get(text, text)


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    value = SpecReader(SPEC_FILE.read_text(encoding="utf-8")).read()
    assert isinstance(value, dict)
    return value


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/"), ref
    resolved: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return resolved


def conforms(spec: dict[str, Any], schema: dict[str, Any], value: Any, where: str) -> list[str]:
    """Problems of ``value`` against ``schema``: required keys, types, enums, recursively."""
    schema = resolve(spec, schema)
    if value is None:  # Rust's None; the spec does not mark fields nullable
        return []
    kind = schema.get("type")
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if kind == "object" or "properties" in schema:
        if not isinstance(value, dict):
            return [f"{where}: not an object"]
        problems += [
            f"{where}: missing required {r}" for r in schema.get("required", []) if r not in value
        ]
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None:
                problems += conforms(spec, sub, item, f"{where}.{key}")
    elif kind == "array":
        if not isinstance(value, list):
            return [f"{where}: not an array"]
        for n, item in enumerate(value):
            problems += conforms(spec, schema.get("items", {}), item, f"{where}[{n}]")
    elif kind in ("string", "integer", "boolean"):
        want = {"string": str, "integer": int, "boolean": bool}[kind]
        if not isinstance(value, want) or (kind == "integer" and isinstance(value, bool)):
            problems.append(f"{where}: {value!r} is not {kind}")
    return problems


def test_the_spec_is_the_vendored_v53_with_its_notice(spec: dict[str, Any]) -> None:
    notice = (CONTRACT / "NOTICE").read_text()
    assert "v53.0" in notice
    assert "Apache-2.0" in notice
    assert spec["info"]["license"]["name"] == "Apache 2.0"
    assert spec["servers"] == [{"url": "http://localhost/api/v1"}]
    assert "TokenBucket" in spec["components"]["schemas"]
    assert spec["components"]["schemas"]["VmState"]["enum"] == [
        "Created",
        "Running",
        "Shutdown",
        "Paused",
    ]


def test_the_reader_refuses_what_it_does_not_understand() -> None:
    for text in ("a: &x 1\n", "a: {b: 1}\n", "a: 1\n---\nb: 2\n", "a:\n  b: 1\n c: 2\n"):
        with pytest.raises(ValueError, match=r"unsupported|unexpected|not a mapping"):
            SpecReader(text).read()


class Recorder:
    """Stands between ChApiClient and the socket: records each request it would send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any] | None]] = []

    def __call__(
        self, method: str, endpoint: str, body: dict[str, Any] | None = None, **_: Any
    ) -> dict[str, Any]:
        self.sent.append((method, endpoint, body))
        return {}


def test_every_request_the_client_sends_is_in_the_spec(
    spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    client = ChApiClient("/unused.sock")
    monkeypatch.setattr(client, "request", recorder)
    client.ping()
    client.info()
    client.add_fs(tag="myfs", socket="/run/fs.sock", device_id="myfs0")
    client.remove_device("myfs0")
    client.reboot()
    assert {(m, e) for m, e, _ in recorder.sent} == {
        ("GET", "vmm.ping"),
        ("GET", "vm.info"),
        ("PUT", "vm.add-fs"),
        ("PUT", "vm.remove-device"),
        ("PUT", "vm.reboot"),
    }
    for method, endpoint, body in recorder.sent:
        operation = spec["paths"][f"/{endpoint}"][method.lower()]
        request_body = operation.get("requestBody")
        assert (body is not None) == (request_body is not None), endpoint
        if body is None:
            continue
        schema = resolve(spec, request_body["content"]["application/json"]["schema"])
        assert set(schema.get("required", [])) <= set(body), endpoint
        assert set(body) <= set(schema["properties"]), endpoint
        assert conforms(spec, schema, body, endpoint) == []


def test_the_stand_in_answers_match_the_spec(
    spec: dict[str, Any], make_ch: Callable[..., ChStandIn], backend: FakeBackend
) -> None:
    stand_in = make_ch(eject_delay_s=None)
    client = client_of(stand_in)
    added = add(client, backend.path)
    client.remove_device("myfs0")
    add(client, backend.path, "second")
    paths = spec["paths"]
    for endpoint, answer in (
        ("vmm.ping", client.ping()),
        ("vm.info", client.info()),
        ("vm.add-fs", added),
    ):
        method = "get" if endpoint != "vm.add-fs" else "put"
        schema = paths[f"/{endpoint}"][method]["responses"]["200"]["content"]["application/json"][
            "schema"
        ]
        assert conforms(spec, schema, answer, endpoint) == []
    info_schema = spec["components"]["schemas"]["VmInfo"]
    assert set(info_schema["required"]) <= set(client.info())
    assert "204" in paths["/vm.remove-device"]["put"]["responses"]
    assert "204" in paths["/vm.reboot"]["put"]["responses"]
    assert stat.S_ISSOCK(stand_in.api_socket.stat().st_mode)


# --- bounded answers: size and shape ---------------------------------------------------

_STEP = b"x" * 65536
_SAFETY_STEPS = 1024  # 64 MiB: a regression fails the test instead of filling the memory


class OneAnswer:
    """A VMM that answers one request with ``head`` and then ``body`` until the client
    hangs up; ``sent`` counts the body bytes that got out."""

    def __init__(self, path: Path, head: bytes, body: Iterator[bytes]) -> None:
        self.path = path
        self.head = head
        self.body = body
        self.sent = 0
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> OneAnswer:
        self._listener.bind(str(self.path))
        self._listener.listen(1)
        self._listener.settimeout(20.0)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(30.0)
        assert not self._thread.is_alive()
        self._listener.close()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            conn.settimeout(20.0)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            try:
                conn.sendall(self.head)
                for piece in self.body:
                    conn.sendall(piece)
                    self.sent += len(piece)
            except OSError:  # the client hung up: what a bounded read does
                return


def endless_chunks() -> Iterator[bytes]:
    chunk = b"%x\r\n%s\r\n" % (len(_STEP), _STEP)
    yield from (chunk for _ in range(_SAFETY_STEPS))
    yield b"0\r\n\r\n"


def test_an_endless_chunked_body_is_refused_after_the_limit(short_dir: Path) -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    path = short_dir / "api.sock"
    limit = f"over the {MAX_BODY} byte limit"
    with OneAnswer(path, head, endless_chunks()) as fake, pytest.raises(ChError, match=limit):
        ChApiClient(str(path), timeout_s=20).info()
    assert fake.sent < 4 * MAX_BODY  # the limit and what the socket buffers held


def test_a_huge_content_length_is_refused_before_reading(short_dir: Path) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 536870912\r\n\r\n"
    body = (_STEP for _ in range(_SAFETY_STEPS))
    path = short_dir / "api.sock"
    limit = f"536870912 bytes, over the {MAX_BODY} limit"
    with OneAnswer(path, head, body) as fake, pytest.raises(ChError, match=limit):
        ChApiClient(str(path), timeout_s=20).info()
    assert fake.sent < 4 * MAX_BODY


def answer_with(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.mark.parametrize(
    ("info", "where"),
    [
        ({"config": []}, "config is not an object"),
        ({"config": {"fs": {"id": "x"}}}, r"config\.fs is not a list"),
        ({"config": {"fs": [1, "x"]}}, r"config\.fs\[0\] is not an object"),
        ({"config": {"fs": [{"id": "a"}, {"id": 7}]}}, r"config\.fs\[1\]\.id is not a string"),
        ({"config": {"fs": [{"tag": ["t"]}]}}, r"config\.fs\[0\]\.tag is not a string"),
        ({"config": {"fs": [{"socket": {}}]}}, r"config\.fs\[0\]\.socket is not a string"),
        ({"config": {"fs": [{"num_queues": "2"}]}}, r"num_queues is not an integer"),
        ({"device_tree": []}, "device_tree is not an object"),
    ],
)
def test_a_malformed_vm_info_names_the_field(
    short_dir: Path, info: dict[str, Any], where: str
) -> None:
    path = short_dir / "api.sock"
    with (
        OneAnswer(path, answer_with(orjson.dumps(info)), iter(())),
        pytest.raises(ChError, match=where),
    ):
        ChApiClient(str(path), timeout_s=20).info()


def test_the_start_up_check_takes_a_malformed_vm_info_as_unknown(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    share = ShareConfig(name="data", tag="data", socket=str(short_dir / "fs.sock"), shared_dir="/")
    vmm = VmmConfig(kind="cloud-hypervisor", api_socket=str(short_dir / "api.sock"))
    actions = LiveActions([share], cast("Daemons", None), ShareWorkers(print), vmm=vmm)
    decision = Decision(
        key="k1",
        time=0.0,
        not_before=0.0,
        share="data",
        incident="i1",
        action=Action.READD,
        rule="r1",
        cause=None,
    )
    answer = answer_with(b'{"config": [], "state": "Running"}')
    with OneAnswer(short_dir / "api.sock", answer, iter(())), caplog.at_level("WARNING"):
        assert actions.check(decision) == "redo"
    assert "config is not an object" in caplog.text
