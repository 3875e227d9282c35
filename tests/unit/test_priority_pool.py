"""The API request pool: the most urgent queued request runs first; shutdown cancels the rest."""

from __future__ import annotations

import threading

from darwin_operator.priority_pool import LATER, NORMAL, SOON, URGENT, PriorityPool


def test_queued_requests_run_most_urgent_first_and_in_arrival_order_within_a_priority():
    pool = PriorityPool(1, "test")
    gate = threading.Event()
    ran: list[str] = []
    blocker = pool.submit(NORMAL, gate.wait)  # holds the only thread while the rest queue up
    futures = [
        pool.submit(priority, lambda name=name: ran.append(name))
        for priority, name in [
            (LATER, "event 1"),
            (NORMAL, "apply"),
            (SOON, "lift gate"),
            (URGENT, "create pod 1"),
            (NORMAL, "status"),
            (LATER, "event 2"),
            (URGENT, "create pod 2"),
        ]
    ]
    gate.set()
    blocker.result(timeout=10)
    for future in futures:
        future.result(timeout=10)
    assert ran == [
        "create pod 1",
        "create pod 2",
        "lift gate",
        "apply",
        "status",
        "event 1",
        "event 2",
    ]
    pool.shutdown()


def test_shutdown_cancels_what_has_not_started_and_errors_reach_the_caller():
    pool = PriorityPool(1, "test")
    gate, started = threading.Event(), threading.Event()
    running = pool.submit(NORMAL, lambda: (started.set(), gate.wait())[1])
    assert started.wait(timeout=10)
    queued = pool.submit(URGENT, lambda: "never")
    pool.shutdown()
    gate.set()
    assert running.result(timeout=10) is True
    assert queued.cancelled()
    assert pool.submit(URGENT, lambda: "after").cancelled()

    failing = PriorityPool(1, "test")
    error = failing.submit(URGENT, lambda: 1 / 0).exception(timeout=10)
    assert isinstance(error, ZeroDivisionError)
    failing.shutdown()


def test_a_request_waits_while_a_more_urgent_one_is_in_flight_even_with_a_worker_free():
    pool = PriorityPool(2, "test")
    gate = threading.Event()
    ran: list[str] = []
    first = pool.submit(URGENT, lambda: (gate.wait(), ran.append("create pod 1")))
    apply = pool.submit(NORMAL, lambda: ran.append("apply"))
    # the free worker takes the next pod write; the apply waits although it came first
    pool.submit(URGENT, lambda: ran.append("create pod 2")).result(timeout=10)
    assert ran == ["create pod 2"]
    gate.set()
    first.result(timeout=10)
    apply.result(timeout=10)
    assert ran == ["create pod 2", "create pod 1", "apply"]
    pool.shutdown()
