"""The ``notify`` action: the alert to the configured hook.

``[alert] command`` is an argv (its program an absolute path, no shell, no PATH
search); the alert goes to its standard input as one JSON object, never into its
argv, so nothing a log said reaches a command line. It runs on a worker of its own
(a slow pager does not hold a share's re-add back), with a small fixed environment,
and is killed after ``[alert] timeout`` seconds; what it prints is kept up to 64 KiB
per stream. Exit 0 is delivered; anything else is a failed action with its reason.

An alert is sent at most once: after a crash, one that had started is not sent
again (the checker says "done"), since the journal cannot tell whether the hook got
it.
"""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Any

import orjson

from healer import __version__
from healer.config import AlertConfig
from healer.engine import Decision
from healer.engine.model import Status
from healer.output import iso_time
from healer.supervise.capture import run_captured

__all__ = ["ALERT_ENV", "alert_document", "send_alert"]

ALERT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
"""The hook's whole environment: healer's own (a token, a socket) is not passed on."""
_KEEP = 64 * 1024


def alert_document(decision: Decision, *, config: str, host: str | None = None) -> dict[str, Any]:
    """What the hook reads: the decision, its cause and who sends it (pure)."""
    cause = decision.cause
    return {
        "version": 1,
        "action": decision.action,
        "share": decision.share,
        "incident": decision.incident,
        "rule": decision.rule,
        "key": decision.key,
        "time": iso_time(decision.time),
        "cause": None
        if cause is None
        else {
            "kind": cause.kind,
            "source": cause.source,
            "line": cause.line,
            "time": iso_time(cause.time),
        },
        "healer": {
            "version": __version__,
            "pid": os.getpid(),
            "host": host or socket.gethostname(),
            "config": config,
        },
    }


def send_alert(alert: AlertConfig, document: dict[str, Any]) -> tuple[Status, str]:
    """Run the hook once with ``document`` on its stdin: the status and why."""
    data = orjson.dumps(document) + b"\n"
    try:
        done = run_captured(
            alert.command, timeout_s=alert.timeout, stdin=data, max_bytes=_KEEP, env=ALERT_ENV
        )
    except subprocess.TimeoutExpired:
        return Status.TIMED_OUT, f"the alert command ran over {alert.timeout:g} s (killed)"
    except OSError as exc:
        return Status.FAILED, f"the alert command cannot run: {exc.strerror or exc}"
    if done.returncode == 0:
        return Status.SUCCEEDED, "delivered to the alert command"
    said = done.stderr.decode("utf-8", "replace").strip().splitlines()
    tail = f": {said[-1][:200]}" if said else ""
    return Status.FAILED, f"the alert command exited {done.returncode}{tail}"
