"""The watchdog's configuration: one TOML file, validated before anything starts.

Every problem is reported with file, line and fix (:class:`ConfigError`), all at
once. Values that reach a command line are checked here: share names and tags are
identifiers, paths are absolute, argv templates are lists of strings whose only
placeholders are the known ``{names}``. Text from logs never fills a placeholder.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from healer.holder.sockets import SHARED_DIRECTORY_FIX, shared_directory
from healer.logline import LEVELS
from healer.tomlspot import LocatedError, Problem, Spots, suggest

__all__ = [
    "PLACEHOLDERS",
    "AlertConfig",
    "Config",
    "ConfigError",
    "GuestConfig",
    "ShareConfig",
    "SourceConfig",
    "VmmConfig",
    "check_host",
    "is_loopback",
    "load_config",
    "runtime_dir",
    "split_address",
]

PLACEHOLDERS = frozenset({"fd", "shared_dir", "socket", "tag", "mount_point", "api_socket", "id"})
"""What an argv template may name; each is filled from the configuration."""

_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

_TOP = {"healer", "share", "vmm", "guest", "source", "alert"}
_ALERT = {"command", "timeout"}
_HEALER = {
    "journal",
    "rules",
    "metrics",
    "metrics_textfile",
    "fsync",
    "notify",
    "notify_step_ms",
    "action_queue",
    "adopt_wait",
    "clock_skew",
    "log_level",
    "runtime",
}
_SHARE = {
    "name",
    "tag",
    "socket",
    "shared_dir",
    "mode",
    "virtiofsd",
    "pid_file",
    "log",
    "mount_point",
    "vm",
}
_VMM = {"name", "kind", "api_socket", "ch_remote", "qmp_socket", "on_stuck", "device_del_timeout"}
_GUEST = {"vm", "transport", "remount", "console", "prompt", "mount_point", "rescan"}
_VMM_KINDS = ("cloud-hypervisor", "qemu")
_ON_STUCK = ("notify", "system_reset")
_QEMU_ONLY = ("qmp_socket", "on_stuck", "device_del_timeout")
_CH_ONLY = ("api_socket", "ch_remote")
_TRANSPORTS = ("argv", "serial")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")
_SOURCE = {"path", "name", "trust", "vm"}
DEFAULT_VM = "vm"  # the name of a VM a single [vmm] or [guest] table describes


class ConfigError(LocatedError):
    """The configuration cannot be used; ``problems`` locates each."""


@dataclass(frozen=True, slots=True)
class ShareConfig:
    """One virtio-fs share: its virtiofsd, socket and tag."""

    name: str
    tag: str
    socket: str
    shared_dir: str
    mode: str = "supervise"  # or "adopt": someone else starts virtiofsd
    virtiofsd: tuple[str, ...] = ()  # empty: the installed virtiofsd, default flags
    pid_file: str | None = None
    log: str | None = None
    mount_point: str | None = None  # in the guest; default: [guest] mount_point
    vm: str = "vm"  # the VM it is a device of: a [[vmm]] name, or a [[guest]]'s vm


@dataclass(frozen=True, slots=True)
class VmmConfig:
    """How to reach the VMM: cloud-hypervisor's API socket (or a ch-remote argv), or
    QEMU's QMP socket with what to do when a device cannot be removed."""

    kind: str
    api_socket: str = ""
    ch_remote: tuple[str, ...] = ()
    qmp_socket: str = ""
    on_stuck: str = "notify"  # or "system_reset" (opt-in): device_del did not complete
    device_del_timeout_s: float = 5.0
    name: str = "vm"  # which VM: shares and guests name it


@dataclass(frozen=True, slots=True)
class GuestConfig:
    """How to remount in the guest: an argv prefix (ssh ...) or a serial console, and
    the mount point."""

    remount: tuple[str, ...]
    mount_point: str
    rescan: bool = False
    transport: str = "argv"  # or "serial"
    console: str = ""  # serial: the console's Unix socket
    prompt: str = r"[#$] ?$"  # serial: a regular expression ending the shell's prompt
    vm: str = "vm"  # the VM this transport reaches


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Who hears of a ``notify``: an argv run with the alert as JSON on its standard
    input, killed after ``timeout`` seconds."""

    command: tuple[str, ...]
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """A log healer tails; ``trust = "guest"`` when the guest can write into it (a
    serial console file, a VMM log that carries the guest's console)."""

    path: str
    name: str
    trust: str = "host"
    vm: str | None = None  # the VM whose log this is: device ids are looked up in it


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration of one watchdog."""

    file: str
    journal: str
    shares: tuple[ShareConfig, ...]
    sources: tuple[SourceConfig, ...] = ()
    vmm: VmmConfig | None = None
    guest: GuestConfig | None = None
    alert: AlertConfig | None = None
    vmms: tuple[VmmConfig, ...] = ()  # every VM's VMM (vmm: the one, when there is one)
    guests: tuple[GuestConfig, ...] = ()  # every VM's guest transport (guest: the one)
    rules: str | None = None
    metrics: str = "127.0.0.1:9464"  # "" when metrics = "off"
    fsync: str = "decisions"
    metrics_textfile: str | None = None  # node_exporter textfile collector mode
    notify: str = "inotify"  # or "watchfiles": what says "a log changed"
    notify_step_ms: int = 20  # watchfiles' step: latency vs idle wake-ups
    action_queue: int = 16  # slow actions waiting per share, beyond which they fail
    adopt_wait: float = 60.0  # seconds to wait for an adopted virtiofsd to come back
    clock_skew: float = 2.0  # seconds a line's own stamp may be ahead of its read time
    log_level: str = "info"  # healer's own log lines: debug, info, warning, error
    runtime: str = ""  # the holder's directory ("": see runtime_dir)


class _Check:
    """Collects located problems while reading one file."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.spots = Spots(text)
        self.problems: list[Problem] = []

    def bad(self, path: tuple[str | int, ...], message: str, fix: str) -> None:
        self.problems.append(Problem(self.name, self.spots.line(*path), message, fix))

    def keys(self, table: dict[str, Any], allowed: set[str], path: tuple[str | int, ...]) -> None:
        for key in table:
            if key not in allowed:
                self.bad((*path, key), f"unknown key {key!r}", suggest(key, allowed))

    def text(
        self, table: dict[str, Any], key: str, path: tuple[str | int, ...], *, required: bool = True
    ) -> str | None:
        value = table.get(key)
        if value is None:
            if required:
                self.bad(path, f"missing key {key!r}", f"add {key} = ...")
            return None
        if not isinstance(value, str) or not value:
            self.bad((*path, key), f"{key} must be a non-empty string", f'e.g. {key} = "..."')
            return None
        return value

    def absolute(
        self, table: dict[str, Any], key: str, path: tuple[str | int, ...], *, required: bool = True
    ) -> str | None:
        value = self.text(table, key, path, required=required)
        if value is not None and not Path(value).is_absolute():
            self.bad(
                (*path, key), f"{key} {value!r} is not an absolute path", "write the full path"
            )
            return None
        return value

    def ident(self, table: dict[str, Any], key: str, path: tuple[str | int, ...]) -> str | None:
        value = self.text(table, key, path)
        if value is not None and not _IDENT.match(value):
            self.bad(
                (*path, key),
                f"{key} {value!r} is not an identifier",
                "letters, digits, '.', '_' and '-', at most 64",
            )
            return None
        return value

    def choice(
        self,
        table: dict[str, Any],
        key: str,
        allowed: tuple[str, ...],
        path: tuple[str | int, ...],
        fix: str,
    ) -> str | None:
        """One of ``allowed`` (the first is the default); None, and a problem, if not."""
        value = table.get(key, allowed[0])
        if value not in allowed:
            self.bad((*path, key), f"{key} {value!r} is unknown", fix)
            return None
        return str(value)

    def foreign(
        self, table: dict[str, Any], keys: tuple[str, ...], path: tuple[str | int, ...], fix: str
    ) -> None:
        """Keys that belong to another kind of the same table."""
        for key in keys:
            if key in table:
                self.bad((*path, key), f"{key} does not apply here", fix)

    def argv(self, table: dict[str, Any], key: str, path: tuple[str | int, ...]) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.bad(
                (*path, key),
                f"{key} must be a list of strings (an argv)",
                f'e.g. {key} = ["ssh", "vm"]',
            )
            return ()
        for arg in value:
            for name in _PLACEHOLDER.findall(arg):
                if name not in PLACEHOLDERS:
                    self.bad(
                        (*path, key),
                        f"unknown placeholder {{{name}}} in {key}",
                        f"use one of {sorted(PLACEHOLDERS)}",
                    )
        return tuple(value)


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [Problem(str(file), 0, f"cannot read: {exc.strerror}", "check the path")]
        ) from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        problem = f"not UTF-8 text (byte {exc.start})"
        raise ConfigError([Problem(str(file), line, problem, "save it as UTF-8 text")]) from exc


def load_config(path: Path | str) -> Config:
    """Read and validate one configuration file; raise ConfigError with every problem."""
    file = Path(path)
    text = _read_text(file)
    check = _Check(str(file), text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = int(m.group(1)) if m else max(1, text.count("\n"))
        raise ConfigError(
            [Problem(str(file), line, f"not valid TOML: {exc}", "fix the syntax")]
        ) from exc
    check.keys(data, _TOP, ())
    healer = _table(check, data, "healer")
    check.keys(healer, _HEALER, ("healer",))
    journal = check.absolute(healer, "journal", ("healer",)) or ""
    rules = check.text(healer, "rules", ("healer",), required=False)
    metrics = check.text(healer, "metrics", ("healer",), required=False) or "127.0.0.1:9464"
    if metrics == "off":
        metrics = ""
    else:
        try:
            split_address(metrics)
        except ValueError:
            check.bad(
                ("healer", "metrics"),
                f"metrics {metrics!r} is not an IP address and port (no host name is resolved)",
                'e.g. "127.0.0.1:9464", "[::1]:9464", "localhost:9464", or "off"',
            )
    textfile = check.absolute(healer, "metrics_textfile", ("healer",), required=False)
    runtime = check.absolute(healer, "runtime", ("healer",), required=False)
    if textfile is not None and not textfile.endswith(".prom"):
        check.bad(
            ("healer", "metrics_textfile"),
            f"metrics_textfile {textfile!r} does not end in .prom",
            "node_exporter's textfile collector reads only *.prom files",
        )
    fsync = healer.get("fsync", "decisions")
    if fsync not in ("decisions", "always", "never"):
        check.bad(
            ("healer", "fsync"),
            f"fsync {fsync!r} is unknown",
            'one of "decisions", "always", "never"',
        )
    log_level = healer.get("log_level", "info")
    if log_level not in LEVELS:
        check.bad(
            ("healer", "log_level"),
            f"log_level {log_level!r} is unknown",
            'one of "debug", "info" (the default), "warning", "error"',
        )
    notify = healer.get("notify", "inotify")
    if notify not in ("watchfiles", "inotify"):
        check.bad(
            ("healer", "notify"),
            f"notify {notify!r} is unknown",
            '"inotify" (Linux, the default) or "watchfiles" (portable)',
        )
    limits = {
        key: _number(check, healer, key, bounds)
        for key, bounds in (
            ("notify_step_ms", (20, 1, 1000)),
            ("action_queue", (16, 1, 1024)),
            ("adopt_wait", (60.0, 0.1, 3600.0)),
            ("clock_skew", (2.0, 0.0, 86400.0)),
        )
    }
    shares = _shares(check, data.get("share", []))
    sources = _sources(check, data.get("source", []))
    vmms: tuple[VmmConfig, ...] = _named(check, data, "vmm", _vmm, lambda v, n: replace(v, name=n))
    guests: tuple[GuestConfig, ...] = _named(
        check, data, "guest", _guest, lambda g, n: replace(g, vm=n)
    )
    shares = _vms_of_shares(check, data.get("share", []), shares, vmms, guests)
    sources = _vms_of_sources(check, sources, vmms, guests)
    alert = _alert(check, data["alert"]) if "alert" in data else None
    serial = {g.vm for g in guests if g.transport == "serial"}
    for index, share in enumerate(shares):
        if share.vm in serial and share.mount_point and not _SAFE_PATH.match(share.mount_point):
            check.bad(
                ("share", index, "mount_point"),
                f"mount_point {share.mount_point!r} goes into a guest shell line",
                "use letters, digits, '.', '_', '-' and '/' only",
            )
    if check.problems:
        raise ConfigError(check.problems)
    return Config(
        file=str(file),
        journal=journal,
        shares=shares,
        sources=sources,
        vmm=vmms[0] if len(vmms) == 1 else None,
        guest=guests[0] if len(guests) == 1 else None,
        vmms=vmms,
        guests=guests,
        alert=alert,
        rules=rules,
        metrics=metrics,
        fsync=str(fsync),
        metrics_textfile=textfile,
        notify=str(notify),
        notify_step_ms=int(limits["notify_step_ms"]),
        action_queue=int(limits["action_queue"]),
        adopt_wait=float(limits["adopt_wait"]),
        clock_skew=float(limits["clock_skew"]),
        log_level=str(log_level),
        runtime=runtime or "",
    )


def check_host(config: Config) -> list[Problem]:
    """What this host says about a valid configuration, for ``healer check``.

    A supervised share whose virtiofsd cannot be run (argv[0], or a program after a
    dynamic loader, does not exist or is not executable; no installed virtiofsd for
    the default) is an error: every start would fail, so ConfigError names each. A
    shared_dir that does not exist (yet) is returned as a warning: a mount or the
    provisioning may create it before healer starts the share; one that is not a
    directory is an error.
    """
    from healer.errors import InputError  # noqa: PLC0415 - the probe's error
    from healer.supervise.process import find_daemon, program_index  # noqa: PLC0415

    try:
        text = Path(config.file).read_text(encoding="utf-8")
    except OSError:
        text = ""
    check = _Check(config.file, text)
    warnings: list[Problem] = []
    default: str | None = None  # why the installed virtiofsd cannot be used, once
    looked = False
    for index, share in enumerate(config.shares):
        path: tuple[str | int, ...] = ("share", index)
        if share.mode != "supervise":
            continue
        where = Path(share.shared_dir)
        if where.exists() and not where.is_dir():
            check.bad((*path, "shared_dir"), f"shared_dir {str(where)!r} is not a directory",
                      "name the directory the share serves")  # fmt: skip
        elif not where.exists():
            warnings.append(
                Problem(
                    config.file,
                    check.spots.line(*path, "shared_dir"),
                    f"share {share.name}: shared_dir {str(where)!r} does not exist (yet): "
                    "virtiofsd fails to start until it does",
                    "create it (or mount it) before healer starts the share",
                )
            )
        if share.virtiofsd:
            argv = list(share.virtiofsd)
            for program in dict.fromkeys((argv[0], argv[program_index(argv)])):
                problem = _not_runnable(program)
                if problem is not None:
                    check.bad((*path, "virtiofsd"), f"share {share.name}: {problem}",
                              _program_fix(program))  # fmt: skip
            continue
        if not looked:
            looked = True
            try:
                found = find_daemon()
            except InputError as exc:
                default = f"{exc.path} {exc.problem}"
            else:
                default = None if found else "no virtiofsd is installed"
        if default is not None:
            check.bad(
                path,
                f"share {share.name}: {default}",
                "install virtiofsd (Debian: apt-get install virtiofsd) or set share.virtiofsd",
            )
    if check.problems:
        raise ConfigError(check.problems)
    return warnings


def _not_runnable(program: str) -> str | None:
    """Why the holder could not run ``program`` (it is run as is: no PATH search)."""
    if "{" in program:
        return None  # a placeholder: filled in at start
    if not Path(program).is_absolute():
        return f"virtiofsd {program!r} is not an absolute path (healer searches no PATH)"
    if not Path(program).is_file():
        return f"virtiofsd {program!r} does not exist"
    if not os.access(program, os.X_OK):
        return f"virtiofsd {program!r} is not executable"
    return None


def _program_fix(program: str) -> str:
    found = shutil.which(Path(program).name)
    return f"write its full path, e.g. {found!r}" if found else "install it, or name the right path"


def _number(
    check: _Check,
    table: dict[str, Any],
    key: str,
    bounds: tuple[float, float, float],
    path: tuple[str | int, ...] = ("healer",),
) -> float:
    """A bounded number, ``bounds`` = (default, low, high); an integer where the default is."""
    default, low, high = bounds
    value = table.get(key, default)
    whole = isinstance(default, int)
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if whole else "a number"
        check.bad((*path, key), f"{key} = {value!r} is not {kind} in [{low}, {high}]",
                  f"e.g. {key} = {default}")  # fmt: skip
        return default
    return value


def runtime_dir(config: Config) -> Path:
    """Where the holder keeps its socket, its state and the daemons' stderr files.

    Not on the journal's disk by default: a journal disk that fills up or fails must not
    keep a virtiofsd from starting. ``[healer] runtime`` if set; else, for root, a
    directory under /run named after the journal; for others under $XDG_RUNTIME_DIR;
    else ``<journal>/holder``.
    """
    if config.runtime:
        return Path(config.runtime)
    name = hashlib.sha256(config.journal.encode()).hexdigest()[:12]
    if os.geteuid() == 0 and Path("/run").is_dir():
        return Path("/run/healer") / name
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "healer" / name
    return Path(config.journal) / "holder"


def split_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"`` or ``"localhost:9464"`` -> an IP address and
    a port; ValueError for anything else. No name is resolved: a name could point
    anywhere, and ``localhost.example:9464`` is not loopback."""
    host, sep, port = address.rpartition(":")
    try:
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ValueError(port)
        if host == "localhost":
            return "127.0.0.1", int(port)
        if host.startswith("[") and host.endswith("]"):
            return str(ipaddress.IPv6Address(host[1:-1])), int(port)
        return str(ipaddress.IPv4Address(host)), int(port)
    except ValueError:
        raise ValueError(f"{address!r} is not an IP address and port") from None


def is_loopback(address: str) -> bool:
    """Whether ``address`` listens on loopback only (the default); off counts as such."""
    if not address:
        return True
    try:
        host, _ = split_address(address)
    except ValueError:
        return False
    return ipaddress.ip_address(host).is_loopback


def _table(check: _Check, data: dict[str, Any], name: str) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        check.bad((name,), f"{name} must be a table", f"write [{name}]")
        return {}
    return table


def _shares(check: _Check, raw: Any) -> tuple[ShareConfig, ...]:
    if not isinstance(raw, list) or not raw:
        check.bad(
            ("share",), "no [[share]] is configured", "add a [[share]] table per virtio-fs share"
        )
        return ()
    shares = []
    seen: dict[str, dict[str, int]] = {"name": {}, "tag": {}, "socket": {}}
    for index, table in enumerate(raw):
        path: tuple[str | int, ...] = ("share", index)
        if not isinstance(table, dict):
            check.bad(path, "a share must be a table", "write [[share]] tables")
            continue
        check.keys(table, _SHARE, path)
        name = check.ident(table, "name", path)
        tag = check.ident(table, "tag", path) if "tag" in table else name
        socket = check.absolute(table, "socket", path)
        shared_dir = check.absolute(table, "shared_dir", path)
        mode = table.get("mode", "supervise")
        unsafe = shared_directory(socket) if socket is not None and mode != "adopt" else None
        if unsafe is not None:
            check.bad((*path, "socket"), unsafe, SHARED_DIRECTORY_FIX)
        if mode not in ("supervise", "adopt"):
            check.bad(
                (*path, "mode"),
                f"mode {mode!r} is unknown",
                '"supervise" (healer runs virtiofsd) or "adopt"',
            )
        argv = check.argv(table, "virtiofsd", path)
        if argv and mode == "supervise" and not any("{fd}" in a for a in argv):
            check.bad(
                (*path, "virtiofsd"),
                "the virtiofsd argv does not pass the held socket",
                'add "--fd={fd}" (C) or "--fd", "{fd}" (Rust)',
            )
        pid_file = check.absolute(table, "pid_file", path, required=False)
        log = check.absolute(table, "log", path, required=False)
        mount_point = check.absolute(table, "mount_point", path, required=False)
        for key, value in (("name", name), ("tag", tag), ("socket", socket)):
            if value is None:
                continue
            if value in seen[key]:
                check.bad(
                    (*path, key),
                    f"{key} {value!r} is already used by share {seen[key][value] + 1}",
                    "give each share its own",
                )
            seen[key][value] = index
        if None not in (name, tag, socket, shared_dir):
            shares.append(
                ShareConfig(
                    name=str(name),
                    tag=str(tag),
                    socket=str(socket),
                    shared_dir=str(shared_dir),
                    mode=str(mode),
                    virtiofsd=argv,
                    pid_file=pid_file,
                    log=log,
                    mount_point=mount_point,
                )
            )
    return tuple(shares)


def _sources(check: _Check, raw: Any) -> tuple[SourceConfig, ...]:
    if not isinstance(raw, list):
        check.bad(("source",), "source must be [[source]] tables", "write [[source]]")
        return ()
    sources = []
    for index, table in enumerate(raw):
        path: tuple[str | int, ...] = ("source", index)
        if not isinstance(table, dict):
            check.bad(path, "a source must be a table", "write [[source]] tables")
            continue
        check.keys(table, _SOURCE, path)
        file = check.absolute(table, "path", path)
        name = check.text(table, "name", path, required=False)
        trust = check.choice(
            table,
            "trust",
            ("host", "guest"),
            path,
            'trust = "guest" when the guest can write into this log, else "host"',
        )
        vm = check.ident(table, "vm", path) if "vm" in table else None
        if file is not None and trust is not None:
            sources.append(
                SourceConfig(path=file, name=name or Path(file).name, trust=trust, vm=vm)
            )
    return tuple(sources)


def _vmm(check: _Check, raw: Any, path: tuple[str | int, ...] = ("vmm",)) -> VmmConfig | None:
    if not isinstance(raw, dict):
        check.bad(path, "vmm must be a table", "write one [vmm] table")
        return None
    check.keys(raw, _VMM, path)
    kind = raw.get("kind", "cloud-hypervisor")
    if kind not in _VMM_KINDS:
        check.bad(
            (*path, "kind"),
            f"vmm kind {kind!r} is not supported",
            'kind = "cloud-hypervisor" or kind = "qemu"',
        )
        return None
    if kind == "qemu":
        return _qemu(check, raw, path)
    check.foreign(raw, _QEMU_ONLY, path, 'a QEMU setting: set kind = "qemu" or remove it')
    api_socket = check.absolute(raw, "api_socket", path)
    ch_remote = check.argv(raw, "ch_remote", path)
    return VmmConfig(str(kind), api_socket or "", ch_remote) if api_socket else None


def _qemu(check: _Check, raw: dict[str, Any], path: tuple[str | int, ...]) -> VmmConfig | None:
    check.foreign(raw, _CH_ONLY, path, "a cloud-hypervisor setting: use qmp_socket")
    qmp_socket = check.absolute(raw, "qmp_socket", path)
    on_stuck = check.choice(
        raw,
        "on_stuck",
        _ON_STUCK,
        path,
        '"notify" (report only) or "system_reset" (opt-in: resets the VM)',
    )
    timeout = raw.get("device_del_timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 600:
        check.bad(
            (*path, "device_del_timeout"),
            f"device_del_timeout {timeout!r} is not a number of seconds in (0, 600]",
            "device_del_timeout = 5.0 (the guest answers an unplug in about 0.25 s)",
        )
        timeout = 5.0
    if qmp_socket is None:
        return None
    return VmmConfig(
        "qemu",
        qmp_socket=qmp_socket,
        on_stuck=on_stuck or "notify",
        device_del_timeout_s=float(timeout),
    )


def _named(
    check: _Check,
    data: dict[str, Any],
    table: str,
    read: Callable[[_Check, Any, tuple[str | int, ...]], Any],
    named: Callable[[Any, str], Any],
) -> tuple[Any, ...]:
    """One ``[vmm]``/``[guest]`` table (its VM named "vm" unless it says), or an array
    of them, each naming its VM; names unique."""
    raw = data.get(table)
    if raw is None:
        return ()
    single = not isinstance(raw, list)
    tables: list[tuple[tuple[str | int, ...], Any]] = (
        [((table,), raw)] if single else [((table, i), t) for i, t in enumerate(raw)]
    )
    key = "name" if table == "vmm" else "vm"
    out: list[Any] = []
    seen: set[str] = set()
    for where, entry in tables:
        name: str | None = DEFAULT_VM
        settings = entry
        if isinstance(entry, dict):
            if key in entry:
                name = check.ident(entry, key, where)
            elif not single:
                check.bad(where, f"each [[{table}]] names its VM", f'{key} = "web"')
                continue
            settings = {k: v for k, v in entry.items() if k != key}
        value = read(check, settings, where)
        if name is None or value is None:
            continue
        if name in seen:
            check.bad((*where, key), f"VM {name!r} has a [{table}] already", "one per VM")
            continue
        seen.add(name)
        out.append(named(value, name))
    return tuple(out)


def _vms_of_shares(
    check: _Check,
    raw: Any,
    shares: tuple[ShareConfig, ...],
    vmms: tuple[VmmConfig, ...],
    guests: tuple[GuestConfig, ...],
) -> tuple[ShareConfig, ...]:
    """Each share's VM: the one it names (it must be configured), else the only one."""
    known = sorted({v.name for v in vmms} | {g.vm for g in guests})
    tables = raw if isinstance(raw, list) else []
    out = []
    for index, share in enumerate(shares):
        table = tables[index] if index < len(tables) and isinstance(tables[index], dict) else {}
        named = table.get("vm")
        if named is None:
            if len(known) > 1:
                check.bad(
                    ("share", index),
                    f"share {share.name!r} does not say which VM it belongs to",
                    f"vm = one of {known}",
                )
            out.append(replace(share, vm=known[0] if known else DEFAULT_VM))
        elif named not in known:
            check.bad(
                ("share", index, "vm"),
                f"vm {named!r} is not a configured VM",
                f"one of {known}" if known else "add a [vmm] or [guest] table with that name",
            )
            out.append(share)
        else:
            out.append(replace(share, vm=str(named)))
    return tuple(out)


def _vms_of_sources(
    check: _Check,
    sources: tuple[SourceConfig, ...],
    vmms: tuple[VmmConfig, ...],
    guests: tuple[GuestConfig, ...],
) -> tuple[SourceConfig, ...]:
    known = {v.name for v in vmms} | {g.vm for g in guests}
    for index, source in enumerate(sources):
        if source.vm is not None and source.vm not in known:
            check.bad(
                ("source", index, "vm"),
                f"vm {source.vm!r} is not a configured VM",
                f"one of {sorted(known)}",
            )
    if len(known) == 1:  # one VM: every log is its
        (only,) = known
        return tuple(replace(s, vm=s.vm or only) for s in sources)
    return sources


def _alert(check: _Check, raw: Any) -> AlertConfig | None:
    if not isinstance(raw, dict):
        check.bad(("alert",), "alert must be a table", "write one [alert] table")
        return None
    check.keys(raw, _ALERT, ("alert",))
    command = check.argv(raw, "command", ("alert",))
    if not command and isinstance(raw.get("command"), list | str):
        return None  # not an argv: told by check.argv
    if not command or not command[0].startswith("/"):
        check.bad(
            ("alert", "command"),
            "command must be an argv whose program is an absolute path (no PATH search)",
            'e.g. command = ["/usr/local/bin/page-oncall", "--team", "storage"]',
        )
        return None
    timeout = float(_number(check, raw, "timeout", (10.0, 0.1, 300.0), ("alert",)))
    return AlertConfig(command, timeout)


def _guest(check: _Check, raw: Any, path: tuple[str | int, ...] = ("guest",)) -> GuestConfig | None:
    if not isinstance(raw, dict):
        check.bad(path, "guest must be a table", "write one [guest] table")
        return None
    check.keys(raw, _GUEST, path)
    transport = check.choice(
        raw,
        "transport",
        _TRANSPORTS,
        path,
        '"argv" (remount = [...]) or "serial" (console = "/path/to/serial.sock")',
    )
    if transport is None:
        return None
    mount_point = check.absolute(raw, "mount_point", path)
    rescan = raw.get("rescan", False)
    if not isinstance(rescan, bool):
        check.bad((*path, "rescan"), "rescan must be true or false", "rescan = true")
    if transport == "serial":
        return _serial(check, raw, mount_point, bool(rescan), path)
    check.foreign(raw, ("console", "prompt"), path, 'a serial setting: transport = "serial"')
    remount = check.argv(raw, "remount", path)
    if not remount:
        check.bad(
            (*path, "remount"),
            "remount must name a transport",
            'e.g. remount = ["ssh", "root@vm", "--"]',
        )
    return GuestConfig(remount, mount_point or "", bool(rescan)) if mount_point else None


def _serial(
    check: _Check,
    raw: dict[str, Any],
    mount_point: str | None,
    rescan: bool,
    path: tuple[str | int, ...],
) -> GuestConfig | None:
    check.foreign(raw, ("remount",), path, "the argv transport's: remove it")
    console = check.absolute(raw, "console", path)
    prompt = check.text(raw, "prompt", path, required=False) or r"[#$] ?$"
    try:
        re.compile(prompt)
    except re.error as exc:
        check.bad((*path, "prompt"), f"prompt is not a regular expression: {exc}", "fix it")
    if mount_point is not None and not _SAFE_PATH.match(mount_point):
        check.bad(
            (*path, "mount_point"),
            f"mount_point {mount_point!r} goes into a guest shell line",
            "use letters, digits, '.', '_', '-' and '/' only",
        )
        return None
    if console is None or mount_point is None:
        return None
    return GuestConfig((), mount_point, rescan, transport="serial", console=console, prompt=prompt)
