"""`healer status` and the operator's commands (pause, resume, reset, restart).

They talk to the running healer over its control socket (healer/live/control.py);
`healer status` falls back to the journal when none runs. Output for people in the
manner of `systemctl status`; `--json` is the control socket's answer as it came
(docs/control.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from healer.engine.model import COMMANDS

if TYPE_CHECKING:
    from healer.config import Config

__all__ = ["CONTROL_COMMANDS", "add_control_commands", "run_control"]

CONTROL_COMMANDS = ("status", *COMMANDS)
_WHAT = {
    "pause": "pause healing SHARE for maintenance (no action is taken until resume)",
    "resume": "resume healing SHARE (its virtiofsd is started if it is gone)",
    "reset": "close SHARE's circuit and clear its backoff, then make sure virtiofsd runs",
    "restart": "restart SHARE's virtiofsd now (the VM's session is dropped and served again)",
}


def add_control_commands(
    commands: argparse._SubParsersAction[Any],
    *,
    config_help: str,
    examples: Callable[..., str],
) -> None:
    """Add the subcommands to the ``healer`` parser."""
    status = commands.add_parser(
        "status",
        help="what the running healer watches, what fails and what it did",
        description=(
            "Per share: phase, pause, daemon and since when, the VMM's connection, the open "
            "incident and its first failure, the last action and its outcome, backoff and "
            "circuit; healer's pid, version, uptime and journal position. From the running "
            "healer's control socket, or from the journal when none runs. Exit 0, or 1 when "
            "a share is not healthy (3 when neither healer nor journal can be read)."
        ),
        epilog=examples(
            "healer status --config /etc/healer/healer.toml",
            "healer status --config /etc/healer/healer.toml --json | jq '.shares[].phase'",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("--config", required=True, metavar="CONFIG", help=config_help)
    status.add_argument("--json", action="store_true", help="the answer as JSON (docs/control.md)")
    for name, what in _WHAT.items():
        command = commands.add_parser(
            name,
            help=what,
            description=(
                f"{what[0].upper()}{what[1:]}. An operator decision, journaled with your uid "
                "and replayed like any other; refused when no healer runs."
            ),
            epilog=examples(f"healer {name} fs0 --config /etc/healer/healer.toml"),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_argument("share", metavar="SHARE", help="the share's name in CONFIG")
        command.add_argument("--config", required=True, metavar="CONFIG", help=config_help)


def run_control(args: argparse.Namespace) -> int:
    """Exit 0 done (or all healthy), 1 refused (or a share not healthy), 3 unreachable."""
    # imported here, not at the top: every healer command builds this parser
    from healer.config import load_config  # noqa: PLC0415
    from healer.live.control import ControlUnavailable, ask  # noqa: PLC0415

    config = load_config(args.config)
    if args.command == "status":
        try:
            answer = ask(config.journal, {"command": "status"})
        except ControlUnavailable as exc:
            if not Path(config.journal).is_dir():
                print(
                    f"healer: {exc}, and no journal yet\n"
                    f"  hint: start it with `healer watch --config {args.config}`",
                    file=sys.stderr,
                )
                return 3
            answer = from_journal(config)
        if args.json:
            sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            print(render(answer))
        shares = answer.get("shares", [])
        return 0 if all(s.get("phase") == "healthy" and not s.get("paused") for s in shares) else 1
    try:
        answer = ask(config.journal, {"command": args.command, "share": args.share})
    except ControlUnavailable as exc:
        print(f"healer: {exc}\n  hint: the command needs a running `healer watch`", file=sys.stderr)
        return 3
    if not answer.get("ok"):
        print(f"healer: {answer.get('error', 'refused')}", file=sys.stderr)
        return 1
    decided = answer.get("decided") or []
    print(f"{args.command} {args.share}: done" + (f" ({', '.join(decided)})" if decided else ""))
    return 0


def from_journal(config: Config) -> dict[str, Any]:
    """The status as the journal left it, when no healer runs (read only)."""
    from healer.engine import Decision, Engine  # noqa: PLC0415 - see run_control
    from healer.fold import fold  # noqa: PLC0415
    from healer.journal import DecisionRecord, OutcomeRecord, read_records  # noqa: PLC0415
    from healer.live.status import iso, outcome_fields  # noqa: PLC0415
    from healer.rulefiles import default_rules_dir, load_rules  # noqa: PLC0415

    engine = Engine(load_rules(config.rules or default_rules_dir()))
    records = list(read_records(Path(config.journal)))
    folded = fold(engine, None, records)
    decided: dict[str, Decision] = {}
    last: dict[str, dict[str, Any]] = {}
    for record in records:
        if isinstance(record, DecisionRecord):
            decided[record.decision.key] = record.decision
        elif isinstance(record, OutcomeRecord) and record.key in decided:
            decision = decided[record.key]
            last[decision.share] = outcome_fields(decision, record.status, record.detail)
    shares = []
    for share in config.shares:
        state = folded.state.shares.get(share.name)
        phase = state.phase.value if state is not None else "healthy"
        shares.append(
            {
                "name": share.name,
                "phase": phase,
                "paused": bool(state and state.paused),
                "daemon": {"pid": None, "since": None, "generation": None},
                "vmm_connected": None,
                "incident": None,
                "last_action": last.get(share.name),
                "pending_actions": sorted(
                    k for k, d in folded.open.items() if d.share == share.name
                ),
                "backoff": {"attempt": state.attempt if state else 0, "next_respawn_in_s": 0.0},
                "circuit": {
                    "open": phase == "circuit-open",
                    "retry_at": iso(state.circuit_until) if state else None,
                },
            }
        )
    return {"ok": True, "version": 1, "running": False, "healer": None, "shares": shares}


def render(answer: dict[str, Any]) -> str:
    """The status for people, in the manner of `systemctl status`."""
    if not answer.get("ok"):
        return f"healer: {answer.get('error', 'no answer')}"
    me = answer["healer"]
    shares = answer["shares"]
    bad = [s for s in shares if s["phase"] != "healthy" or s["paused"]]
    dot = "●" if not bad else "○"
    if me is None:  # from the journal: no healer runs
        lines = [f"○ healer is not running; its journal says ({len(shares)} share(s)):"]
        for share in shares:
            lines += ["", *_share_lines(share)]
        return "\n".join(lines)
    lines = [
        f"{dot} healer {me['version']}: {len(shares)} share(s), "
        f"{len(bad) or 'none'} needing attention",
        f"      pid: {me['pid']}, up {_span(me['uptime_s'])} (since {me['since']})",
        f"   config: {me['config']} (digest {me['config_digest']}, rules {me['rules_digest']})",
        f"  journal: {me['journal']} at seq {me['journal_seq']}",
    ]
    for share in shares:
        lines += ["", *_share_lines(share)]
    return "\n".join(lines)


def _share_lines(share: dict[str, Any]) -> list[str]:
    phase = share["phase"] + (" (paused by the operator)" if share["paused"] else "")
    daemon = share["daemon"]
    running = (
        f"pid {daemon['pid']} since {daemon['since']} (generation {daemon['generation']})"
        if daemon["pid"]
        else "not running"
    )
    served = {True: "yes", False: "no", None: "unknown"}[share["vmm_connected"]]
    lines = [
        f"{'●' if share['phase'] == 'healthy' and not share['paused'] else '○'} "
        f"{share['name']}: {phase}",
        f"    virtiofsd: {running}; VMM connected: {served}",
    ]
    incident = share["incident"]
    if incident is not None:
        lines.append(
            f"     incident: {incident['id']} since {incident['since']}: "
            f"{incident['first_failure']} at {incident['where']} (rule {incident['rule']})"
        )
    last = share["last_action"]
    if last is not None:
        reason = f": {last['reason']}" if last["reason"] else ""
        lines.append(
            f"  last action: {last['action']} ({last['rule']}, on {last['cause']}) "
            f"{last['outcome']} {last['decided']}{reason}"
        )
    if share["pending_actions"]:
        lines.append(f"      pending: {', '.join(share['pending_actions'])}")
    backoff, circuit = share["backoff"], share["circuit"]
    lines.append(
        f"      backoff: attempt {backoff['attempt']}, next respawn in "
        f"{backoff['next_respawn_in_s']:g} s; circuit: "
        + (f"open, retry at {circuit['retry_at']}" if circuit["open"] else "closed")
    )
    return lines


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
