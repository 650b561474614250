"""Per-share action workers: order within a share, shares side by side, bounds counted."""

from __future__ import annotations

import threading

from conftest import wait_for
from prometheus_client import generate_latest

from healer.actions.workers import ShareWorkers
from healer.engine.model import Status
from healer.engine.rules import Policy
from healer.metrics import HealerMetrics


def test_a_shares_work_runs_in_order_and_other_shares_do_not_wait() -> None:
    done: list[tuple[str, Status, str]] = []
    release = threading.Event()
    workers = ShareWorkers(lambda *outcome: done.append(outcome))
    ran: list[str] = []

    def slow() -> Status:
        release.wait(10)
        ran.append("a1")
        return Status.SUCCEEDED

    def a2() -> tuple[Status, str]:
        ran.append("a2")
        return Status.FAILED, "why"

    def b1() -> Status:
        ran.append("b1")
        return Status.SUCCEEDED

    assert workers.submit("a", "a1", slow)
    assert workers.submit("a", "a2", a2)
    assert workers.submit("b", "b1", b1)
    wait_for(lambda: ("b1", "succeeded", "") in done)  # b is not held up by a's slow work
    assert ran == ["b1"]
    release.set()
    wait_for(lambda: len(done) == 3)
    assert ran == ["b1", "a1", "a2"]
    assert done[1:] == [("a1", "succeeded", ""), ("a2", "failed", "why")]
    workers.close()


def test_a_full_queue_refuses_and_counts_and_a_raising_action_fails() -> None:
    done: list[tuple[str, Status, str]] = []
    release = threading.Event()
    workers = ShareWorkers(lambda *outcome: done.append(outcome), queue_limit=1)

    running = threading.Event()

    def boom() -> Status:
        running.set()
        release.wait(10)
        raise RuntimeError("bug")

    assert workers.submit("a", "k1", boom)
    wait_for(running.is_set)  # k1 left the queue
    assert workers.submit("a", "k2", lambda: Status.SUCCEEDED)
    assert not workers.submit("a", "k3", lambda: Status.SUCCEEDED)
    assert workers.rejected == 1
    release.set()
    wait_for(lambda: len(done) == 2)
    assert done[0] == ("k1", "failed", "RuntimeError: bug")
    workers.close()


def test_limit_hits_are_exported_as_one_counter_family() -> None:
    metrics = HealerMetrics(Policy(), shares={"fs0": "fs0"})
    hits = {"input_queue": 0, "action_queue": 2, "line_length": 5}
    metrics.limits = lambda: hits
    text = generate_latest(metrics.registry).decode()
    assert 'healer_limit_hits_total{limit="action_queue"} 2.0' in text
    assert 'healer_limit_hits_total{limit="line_length"} 5.0' in text
    assert 'healer_limit_hits_total{limit="input_queue"} 0.0' in text
