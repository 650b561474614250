"""The watchdog configuration: the README's example is valid; mistakes are located."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from rulepatch import patch_text

from healer.cli import EXIT_CONFIG, EXIT_OK
from healer.config import ConfigError, check_host, is_loopback, load_config, split_address
from healer.supervise import process
from healer.supervise.process import find_daemon

ROOT = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- config-example -->\n```toml\n(.*?)```", text, re.S)
    assert m is not None
    return m.group(1)


def test_the_readme_example_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(readme_example())  # exactly as printed
    config = load_config(path)
    (share,) = config.shares
    assert (share.name, share.tag, share.mode) == ("rootextra_test", "rootextra_test", "supervise")
    assert share.socket == "/work/run/rootextra_test.sock"
    assert config.vmm is not None
    assert config.vmm.api_socket == "/work/run/clh.sock"
    assert config.guest is not None
    assert config.guest.remount == ("ssh", "root@board", "--")
    assert [s.name for s in config.sources] == ["boot.log"]
    result = subprocess.run(
        [sys.executable, "-m", "healer", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert (
        "share rootextra_test: tag rootextra_test, socket /work/run/rootextra_test.sock"
        in result.stdout
    )
    assert "respawn-on-exit" in result.stdout
    assert config.rules is None  # the shipped rules: the example names no rules directory


def test_the_readme_example_passes_check_exactly_as_printed(tmp_path: Path) -> None:
    """What a reader copies is what passes: no line of the block is patched. Its paths
    are the README's own, so on this host its shared_dir may not exist (a warning); with
    no virtiofsd installed at all, that is the one problem (and a located one)."""
    path = tmp_path / "healer.toml"
    path.write_text(readme_example())
    result = subprocess.run(
        [sys.executable, "-m", "healer", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if find_daemon() is None:
        assert result.returncode == EXIT_CONFIG
        assert result.stderr.splitlines()[1:] == [
            f"  {path}:8: share rootextra_test: no virtiofsd is installed (fix: install "
            "virtiofsd (Debian: apt-get install virtiofsd) or set share.virtiofsd)"
        ]
        return
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stderr == ""
    warnings = [line for line in result.stdout.splitlines() if "warning:" in line]
    shared_dir = "/work/rootfs_test"
    assert warnings == (
        []
        if Path(shared_dir).is_dir()
        else [f"  warning: {path}:12: share rootextra_test: shared_dir {shared_dir!r} does not "
              "exist (yet): virtiofsd fails to start until it does (fix: create it (or mount "
              "it) before healer starts the share)"]
    )  # fmt: skip


BASE = """[healer]
journal = "/var/lib/healer"

[[share]]
name = "fs0"
socket = "/run/fs0.sock"
shared_dir = "/srv/fs0"
"""


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        ("colour = 1\n", 8, "unknown key 'colour'"),
        (
            'virtiofsd = ["virtiofsd", "--socket-path={socket}"]\n',
            8,
            "does not pass the held socket",
        ),
        ('virtiofsd = ["virtiofsd", "--fd={fd}", "{cmd}"]\n', 8, "unknown placeholder {cmd}"),
        ('virtiofsd = "virtiofsd --fd=3"\n', 8, "must be a list of strings"),
        ('mode = "auto"\n', 8, "mode 'auto' is unknown"),
        (
            '\n[[share]]\nname = "fs0"\nsocket = "/run/fs1.sock"\nshared_dir = "/srv/x"\n',
            10,
            "name 'fs0' is already used by share 1",
        ),
        (
            '\n[[share]]\nname = "fs1"\nsocket = "/run/fs0.sock"\nshared_dir = "/srv/x"\n',
            11,
            "socket '/run/fs0.sock' is already used",
        ),
        (
            '\n[[share]]\nname = "x y"\nsocket = "/run/x.sock"\nshared_dir = "/srv/x"\n',
            10,
            "name 'x y' is not an identifier",
        ),
        ('\n[guest]\nremount = []\nmount_point = "mnt"\n', 10, "remount must name a transport"),
        (
            '\n[vmm]\nkind = "firecracker"\napi_socket = "/run/q.sock"\n',
            10,
            "vmm kind 'firecracker' is not supported",
        ),
        (
            '\n[vmm]\nkind = "qemu"\napi_socket = "/run/q.sock"\n',
            11,
            "api_socket does not apply here",
        ),
        ('\n[vmm]\nkind = "qemu"\n', 9, "missing key 'qmp_socket'"),
        (
            '\n[vmm]\nkind = "qemu"\nqmp_socket = "/run/q.sock"\non_stuck = "reboot"\n',
            12,
            "on_stuck 'reboot' is unknown",
        ),
        (
            '\n[vmm]\nkind = "qemu"\nqmp_socket = "/run/q.sock"\ndevice_del_timeout = 0\n',
            12,
            "device_del_timeout 0 is not a number of seconds",
        ),
        (
            '\n[vmm]\nqmp_socket = "/run/q.sock"\napi_socket = "/run/ch.sock"\n',
            10,
            "qmp_socket does not apply here",
        ),
        (
            '\n[guest]\ntransport = "serial"\nmount_point = "/mnt/a b"\nconsole = "/run/s"\n',
            11,
            "goes into a guest shell line",
        ),
        ('\n[guest]\ntransport = "serial"\nmount_point = "/mnt"\n', 9, "missing key 'console'"),
        (
            'mount_point = "/mnt/$(x)"\n[guest]\ntransport = "serial"\nconsole = "/run/s"\n'
            'mount_point = "/mnt"\n',
            8,
            "mount_point '/mnt/$(x)' goes into a guest shell line",
        ),
        ('\n[guest]\ntransport = "ssh"\nmount_point = "/mnt"\n', 10, "transport 'ssh' is unknown"),
        ('\n[[source]]\npath = "boot.log"\n', 10, "path 'boot.log' is not an absolute path"),
    ],
)
def test_mistakes_are_located(tmp_path: Path, extra: str, line: int, message: str) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(BASE + extra)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = [p for p in caught.value.problems if message in p.message]
    assert problems, caught.value.problems
    assert (problems[0].file, problems[0].line) == (str(path), line)
    assert problems[0].fix


def test_shares_are_required_and_paths_absolute(tmp_path: Path) -> None:
    path = tmp_path / "healer.toml"
    path.write_text('[healer]\njournal = "relative"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    messages = [p.message for p in caught.value.problems]
    assert "journal 'relative' is not an absolute path" in messages
    assert "no [[share]] is configured" in messages


def test_check_reports_a_bad_configuration_with_exit_4(tmp_path: Path) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(BASE + "bogus = true\n")
    result = subprocess.run(
        [sys.executable, "-m", "healer", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == EXIT_CONFIG
    assert "the configuration cannot be used" in result.stderr
    assert f"{path}:8: unknown key 'bogus'" in result.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("notify_step_ms = 0", "notify_step_ms = 0 is not an integer in [1, 1000]"),
        ("notify_step_ms = 2.5", "is not an integer"),
        ("action_queue = true", "action_queue = True is not an integer"),
        ('adopt_wait = "1m"', "adopt_wait = '1m' is not a number in [0.1, 3600.0]"),
        ("clock_skew = -1", "clock_skew = -1 is not a number in [0.0, 86400.0]"),
        ('log_level = "loud"', "log_level 'loud' is unknown"),
    ],
)
def test_limits_are_bounded_numbers(tmp_path: Path, setting: str, message: str) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(patch_text(BASE, "[healer]\n", f"[healer]\n{setting}\n"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert message in problem.message
    assert problem.line == 2


def test_limits_default_and_take_their_values(tmp_path: Path) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(BASE)
    config = load_config(path)
    assert (config.notify_step_ms, config.action_queue, config.clock_skew) == (20, 16, 2.0)
    path.write_text(
        patch_text(
            BASE, "[healer]\n", "[healer]\nnotify_step_ms = 5\nadopt_wait = 5\nclock_skew = 600\n"
        )
    )
    config = load_config(path)
    assert (config.notify_step_ms, config.adopt_wait, config.clock_skew) == (5, 5.0, 600.0)


def test_qemu_with_a_serial_console(tmp_path: Path) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(
        BASE
        + '\n[vmm]\nkind = "qemu"\nqmp_socket = "/run/qmp.sock"\non_stuck = "system_reset"\n'
        + "device_del_timeout = 2.5\n"
        + '\n[guest]\ntransport = "serial"\nconsole = "/run/ttyS1.sock"\nmount_point = "/mnt/fs0"\n'
    )
    config = load_config(path)
    assert config.vmm is not None
    assert (config.vmm.kind, config.vmm.qmp_socket) == ("qemu", "/run/qmp.sock")
    assert (config.vmm.on_stuck, config.vmm.device_del_timeout_s) == ("system_reset", 2.5)
    assert config.guest is not None
    assert (config.guest.transport, config.guest.console) == ("serial", "/run/ttyS1.sock")
    assert config.guest.mount_point == "/mnt/fs0"


def test_qemu_defaults_to_notify_when_a_device_is_stuck(tmp_path: Path) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(BASE + '\n[vmm]\nkind = "qemu"\nqmp_socket = "/run/qmp.sock"\n')
    config = load_config(path)
    assert config.vmm is not None
    assert (config.vmm.on_stuck, config.vmm.device_del_timeout_s) == ("notify", 5.0)


@pytest.mark.parametrize(
    ("address", "accepted", "loopback"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464), True),
        ("127.8.9.10:1", ("127.8.9.10", 1), True),
        ("[::1]:9464", ("::1", 9464), True),
        ("localhost:9464", ("127.0.0.1", 9464), True),
        ("0.0.0.0:9464", ("0.0.0.0", 9464), False),  # noqa: S104 - a value under test
        ("192.0.2.7:9464", ("192.0.2.7", 9464), False),
        ("[2001:db8::1]:9464", ("2001:db8::1", 9464), False),
        ("localhost.attacker.example:9464", None, False),  # a name: never resolved
        ("127.0.0.1.example:9464", None, False),
        ("metrics.internal:9464", None, False),
        ("127.0.0.1:65536", None, False),
        ("127.0.0.1", None, False),
        ("[::1:9464", None, False),
    ],
)
def test_the_metrics_address_is_an_ip_and_a_port_and_loopback_is_read_from_it(
    tmp_path: Path, address: str, accepted: tuple[str, int] | None, loopback: bool
) -> None:
    """A host name could point anywhere (``localhost.attacker.example``): only IP
    addresses and ``localhost`` itself are taken, and loopback is the address's own."""
    path = tmp_path / "healer.toml"
    path.write_text(BASE.replace("[healer]\n", f'[healer]\nmetrics = "{address}"\n', 1))
    assert is_loopback(address) is loopback
    if accepted is None:
        with pytest.raises(ValueError, match="is not an IP address and port"):
            split_address(address)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        (problem,) = caught.value.problems
        assert (problem.file, problem.line) == (str(path), 2)
        assert "no host name is resolved" in problem.message
    else:
        assert split_address(address) == accepted
        assert load_config(path).metrics == address


def run_healer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "healer", *args], capture_output=True, text=True, check=False
    )


# --- healer check on this host: the shared_dir and the virtiofsd of each share ----------


def config_text(tmp_path: Path, share: str) -> str:
    return (
        f'[healer]\njournal = "{tmp_path / "journal"}"\n\n'
        f'[[share]]\nname = "fs0"\nsocket = "{tmp_path / "fs0.sock"}"\n{share}'
    )


def stub(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_missing_shared_dir_is_a_warning_with_its_line(tmp_path: Path) -> None:
    daemon = stub(tmp_path / "virtiofsd")
    path = tmp_path / "healer.toml"
    path.write_text(
        config_text(
            tmp_path,
            f'shared_dir = "{tmp_path / "later"}"\nvirtiofsd = ["{daemon}", "--fd={{fd}}"]\n',
        )
    )
    result = run_healer("check", str(path))
    assert result.returncode == EXIT_OK, result.stderr
    assert (
        f"  warning: {path}:7: share fs0: shared_dir '{tmp_path / 'later'}' does not exist "
        "(yet): virtiofsd fails to start until it does (fix: create it (or mount it) before "
        "healer starts the share)\n"
    ) in result.stdout
    (tmp_path / "later").mkdir()
    assert "warning" not in run_healer("check", str(path)).stdout


@pytest.mark.parametrize(
    ("share", "message"),
    [
        ('shared_dir = "{tmp}/file"\n', "shared_dir '{tmp}/file' is not a directory"),
        (
            'shared_dir = "{tmp}"\nvirtiofsd = ["{tmp}/nope", "--fd={{fd}}"]\n',
            "share fs0: virtiofsd '{tmp}/nope' does not exist",
        ),
        (
            'shared_dir = "{tmp}"\nvirtiofsd = ["{tmp}/file", "--fd={{fd}}"]\n',
            "share fs0: virtiofsd '{tmp}/file' is not executable",
        ),
        (
            'shared_dir = "{tmp}"\nvirtiofsd = ["virtiofsd", "--fd={{fd}}"]\n',
            "share fs0: virtiofsd 'virtiofsd' is not an absolute path (healer searches no PATH)",
        ),
        (
            'shared_dir = "{tmp}"\n'
            'virtiofsd = ["{tmp}/ld-linux.so.2", "--library-path", "/lib", "{tmp}/gone", "--fd={{fd}}"]\n',
            "share fs0: virtiofsd '{tmp}/gone' does not exist",
        ),
    ],
)
def test_a_daemon_that_cannot_run_is_an_error_on_its_share(
    tmp_path: Path, share: str, message: str
) -> None:
    (tmp_path / "file").write_text("")
    stub(tmp_path / "ld-linux.so.2")
    path = tmp_path / "healer.toml"
    path.write_text(config_text(tmp_path, share.format(tmp=tmp_path)))
    result = run_healer("check", str(path))
    assert result.returncode == EXIT_CONFIG
    assert result.stdout == ""  # nothing is printed before an input is found unusable
    lines = result.stderr.splitlines()
    assert lines[0] == "healer: the configuration cannot be used:"
    (problem,) = lines[1:]
    line = 7 if "shared_dir" in message else 8  # the key at fault
    assert problem.startswith(f"  {path}:{line}: ")
    assert message.format(tmp=tmp_path) in problem
    assert "(fix: " in problem


def test_an_adopted_share_is_not_asked_for_a_daemon(tmp_path: Path) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(
        config_text(
            tmp_path, f'shared_dir = "{tmp_path}/x"\nmode = "adopt"\nvirtiofsd = ["virtiofsd"]\n'
        )
    )
    assert check_host(load_config(path)) == []


def test_no_installed_virtiofsd_is_an_error_for_a_default_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(config_text(tmp_path, f'shared_dir = "{tmp_path}"\n'))
    monkeypatch.setattr(process, "find_daemon", lambda: None)
    with pytest.raises(ConfigError) as caught:
        check_host(load_config(path))
    (problem,) = caught.value.problems
    assert (problem.line, problem.message) == (4, "share fs0: no virtiofsd is installed")
    assert "apt-get install virtiofsd" in problem.fix
    monkeypatch.undo()  # the real probe: an override that names no virtiofsd is refused
    monkeypatch.setenv("HEALER_VIRTIOFSD", str(tmp_path / "nope"))
    with pytest.raises(ConfigError) as caught:
        check_host(load_config(path))
    assert "named by HEALER_VIRTIOFSD" in caught.value.problems[0].message


# --- arrays of tables name their own lines ---------------------------------------------


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        ('\n[[vmm]]\nkind = "qemu"\nqmp_socket = "/run/q.sock"\n', 9, "each [[vmm]] names its VM"),
        ('\n[[guest]]\nmount_point = "/mnt"\n', 9, "each [[guest]] names its VM"),
        ('\n[[source]]\npath = "/var/log/a"\n\n[[source]]\npath = "b"\n', 13, "not an absolute"),
        ('\n[[source]]\npath = "/var/log/a"\ntrust = "guests"\n', 11, "trust 'guests'"),
    ],
)
def test_arrays_of_tables_name_their_own_line(
    tmp_path: Path, extra: str, line: int, message: str
) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(
        '[healer]\njournal = "/var/lib/healer"\n\n[[share]]\nname = "fs0"\n'
        'socket = "/run/fs0.sock"\nshared_dir = "/srv/fs0"\n' + extra
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert (problem.line, message in problem.message) == (line, True), problem


@pytest.mark.parametrize(("table", "message"), [("share", "a share"), ("source", "a source")])
def test_an_array_of_non_tables_is_located_not_a_traceback(
    tmp_path: Path, table: str, message: str
) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(f'{table} = ["fs0"]\n[healer]\njournal = "/var/lib/healer"\n')
    result = run_healer("check", str(path))
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert f"{path}:1: {message} must be a table" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_check_never_runs_anything_for_a_named_daemon(tmp_path: Path) -> None:
    """Existence only: a named virtiofsd is not run (the default one is asked its
    --version, as healer watch does)."""
    marker = tmp_path / "ran"
    daemon = tmp_path / "virtiofsd"
    daemon.write_text(f"#!/bin/sh\ntouch {marker}\n")
    daemon.chmod(0o755)
    path = tmp_path / "healer.toml"
    path.write_text(
        config_text(
            tmp_path, f'shared_dir = "{tmp_path}"\nvirtiofsd = ["{daemon}", "--fd={{fd}}"]\n'
        )
    )
    assert run_healer("check", str(path)).returncode == EXIT_OK
    assert not marker.exists()


def test_a_file_that_is_not_utf8_is_a_located_config_error(tmp_path: Path) -> None:
    """Found by the fuzz job: load_config raised UnicodeDecodeError, and a SIGHUP
    reload of such a file ended healer (tests/test_lifecycle.py covers that)."""
    path = tmp_path / "healer.toml"
    path.write_bytes(BASE.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (problem,) = caught.value.problems
    assert (problem.line, problem.message) == (
        BASE.count("\n") + 1,
        f"not UTF-8 text (byte {len(BASE) + 5})",
    )
