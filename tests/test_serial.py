"""The serial console transport against a scripted shell on a Unix socket.

The scripted shell behaves like busybox ash on a serial port: a prompt followed by a
cursor query, its echo, output lines ending in CR LF. The real guest is driven in
tests/test_guest.py. Waits are bounded; no timing is asserted.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from healer.actions import RemountFailed
from healer.actions.serial import ConsoleError, SerialConsole, SerialRemount, remount_command

Behaviour = Callable[[str], tuple[int, str] | None]  # command -> (status, output) or hang


class Shell:
    """Serves connections one after another; ``commands`` is what each ran."""

    def __init__(
        self, path: Path, behave: Behaviour, *, prompt: bool = True, split_prompt: bool = False
    ) -> None:
        self.behave = behave
        self.prompt = prompt
        self.split_prompt = split_prompt  # "guest#" now, its " " a moment later
        self.commands: list[str] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(4)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                conn.sendall(b"\r\nguest# \x1b[6n")  # an old prompt, before ours
                for raw in lines:
                    line = raw.decode().rstrip("\n")
                    conn.sendall(raw.replace(b"\n", b"\r\n"))  # the echo
                    sync = re.search(r"HEALER(\w+) -sync", line)
                    if sync:
                        if self.prompt and self.split_prompt:
                            conn.sendall(f"HEALER{sync.group(1)}-sync\r\nguest#".encode())
                            time.sleep(0.05)  # the first part is taken for the prompt
                            conn.sendall(b" ")
                        elif self.prompt:
                            conn.sendall(f"HEALER{sync.group(1)}-sync\r\nguest# \x1b[6n".encode())
                        continue
                    marker = re.search(r"HEALER(\w+) \"\$\?\"", line)
                    assert marker is not None
                    command = line.split("-begin; ", 1)[-1].split("; printf", 1)[0]
                    self.commands.append(command)
                    done = self.behave(command)
                    if done is None:
                        continue  # hangs
                    status, output = done
                    tag = marker.group(1)
                    answer = (
                        f"HEALER{tag}-begin\r\n{output}\r\nHEALER{tag}:{status}\r\nguest# \x1b[6n"
                    )
                    conn.sendall(answer.encode())

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Callable[..., Shell]]:
    started: list[Shell] = []

    def start(behave: Behaviour, **kwargs: bool) -> Shell:
        started.append(Shell(tmp_path / "ttyS1.sock", behave, **kwargs))
        return started[-1]

    yield start
    for running in started:
        running.close()


def test_status_and_output_come_back_without_prompts_and_escapes(
    tmp_path: Path, shell: Callable[..., Shell]
) -> None:
    shell(lambda c: (3, "first\r\n\x1b[1msecond\x1b[0m") if c.startswith("false") else (0, "x"))
    console = SerialConsole(str(tmp_path / "ttyS1.sock"))
    done = console.run("false && echo never", timeout_s=5)
    assert (done.status, done.output) == (3, ("first", "second"))
    assert console.run("true", timeout_s=5).status == 0  # a fresh connection each time


def test_no_prompt_a_hang_and_no_console_are_bounded_errors(
    tmp_path: Path, shell: Callable[..., Shell]
) -> None:
    path = str(tmp_path / "ttyS1.sock")
    with pytest.raises(ConsoleError, match="unreachable"):
        SerialConsole(path).run("true", timeout_s=1)
    running = shell(lambda c: None)
    with pytest.raises(ConsoleError, match=r"the command's end did not come within 0\.2 s"):
        SerialConsole(path).run("sleep forever", timeout_s=0.2)
    running.prompt = False
    with pytest.raises(ConsoleError, match="the prompt did not come"):
        SerialConsole(path, prompt_timeout_s=0.2).run("true", timeout_s=1)
    with pytest.raises(ValueError, match="one line"):
        SerialConsole(path).run("true\nreboot", timeout_s=1)


def test_the_remount_runs_one_line_and_reads_the_guest_timings(
    tmp_path: Path, shell: Callable[..., Shell]
) -> None:
    running = shell(lambda c: (0, "healer-remount 10.00 10.25 10.30 12"))
    remount = SerialRemount(SerialConsole(str(tmp_path / "ttyS1.sock")), "fs0", "/mnt/fs0")
    remount.run()
    assert remount.attempts == 1
    assert remount.timings == {"guest_bind": 0.25, "remount": 0.05, "mount_tries": 12.0}
    (command,) = running.commands
    assert command == remount_command("fs0", "/mnt/fs0")
    assert "umount /mnt/fs0" in command
    assert "mount -t virtiofs fs0 /mnt/fs0" in command


def test_a_failing_remount_is_retried_a_bounded_number_of_times(
    tmp_path: Path, shell: Callable[..., Shell]
) -> None:
    running = shell(lambda c: (1, "mount: mounting fs0 on /mnt/fs0 failed"))
    remount = SerialRemount(
        SerialConsole(str(tmp_path / "ttyS1.sock")), "fs0", "/mnt/fs0", max_attempts=2
    )
    with pytest.raises(RemountFailed, match="exit 1"):
        remount.run()
    assert remount.attempts == 2
    assert len(running.commands) == 2


def test_the_command_takes_only_plain_paths() -> None:
    line = remount_command("fs0", "/mnt/fs-0_a.b", rescan=True)
    assert line.index("echo 1 > /sys/bus/pci/rescan") < line.index("umount /mnt/fs-0_a.b")
    with pytest.raises(ValueError, match="cannot go into a guest shell line"):
        remount_command("fs0", "/mnt/a';reboot;'")


def test_a_prompt_whose_last_space_comes_late_does_not_reach_the_output(
    shell: Callable[..., Shell], tmp_path: Path
) -> None:
    """busybox on a slow serial line sent "guest#" and then " ": the first part matched
    the prompt, and the space used to be read as the start of the output (" alive")."""
    shell(lambda command: (0, "alive"), split_prompt=True)
    result = SerialConsole(str(tmp_path / "ttyS1.sock")).run("echo alive", timeout_s=5)
    assert (result.status, result.output) == (0, ("alive",))
