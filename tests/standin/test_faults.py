"""Faults on request: crash, hang, freeze, oom, exit (slow-load: test_loading.py)."""

from __future__ import annotations

import signal

from tests.standin.standin_process import Group, wait_for


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _serving(spawn, model, **kwargs):
    proc = spawn(str(model(1000)), "--served-model-name", "m", **kwargs)
    proc.wait_health(200)
    return proc


def test_crash_from_the_fault_file(spawn, model):
    proc = _serving(spawn, model, env={"STANDIN_DEATH_EXIT_SECONDS": "1.5"})
    proc.fault_file.write_text("crash")
    proc.wait_health(503)
    status, body, _ = proc.request("POST", "/v1/completions", {"model": "m", "prompt": "x"})
    assert status == 500 and b"EngineDeadError" in body
    assert proc.wait_exit() == 1


def test_crash_from_the_environment_once_loaded(spawn, model):
    proc = spawn(
        str(model(1000)), env={"STANDIN_FAULT": "crash", "STANDIN_DEATH_EXIT_SECONDS": "0"}
    )
    assert proc.wait_exit() == 1
    assert "Starting vLLM API server" in proc.output()
    assert "Engine core died: fault: crash" in proc.output()


def test_hang_keeps_health_200_and_requests_unanswered(spawn, model):
    proc = _serving(spawn, model)
    proc.fault_file.write_text("hang")
    wait_for(lambda: "engine hung" in proc.output(), 10, "the hang")
    try:
        proc.request("POST", "/v1/completions", {"model": "m", "prompt": "x"}, timeout=2)
        raise AssertionError("a hung engine answered")
    except TimeoutError:
        pass
    assert proc.health() == 200


def test_freeze_answers_nothing_and_ignores_sigterm(spawn, model):
    proc = _serving(spawn, model)
    proc.fault_file.write_text("freeze")
    wait_for(lambda: "process frozen" in proc.output(), 10, "the freeze")
    assert proc.health(timeout=2) is None
    proc.signal(signal.SIGTERM)
    assert proc.health(timeout=2) is None and proc.proc.poll() is None
    proc.signal(signal.SIGKILL)
    assert proc.wait_exit() == -signal.SIGKILL


def test_oom_allocates_until_stopped(spawn, model):
    proc = _serving(spawn, model, env={"STANDIN_OOM_CAP_MB": "4096"})
    start = _rss_mb(proc.proc.pid)
    proc.fault_file.write_text("oom")
    wait_for(lambda: _rss_mb(proc.proc.pid) > start + 300, 30, "300 MB more resident memory")
    proc.stop()


def test_oom_without_a_limit_gives_up_at_the_cap(spawn, model):
    proc = _serving(spawn, model, env={"STANDIN_OOM_CAP_MB": "128"})
    proc.fault_file.write_text("oom")
    assert proc.wait_exit() == 1
    assert "allocated 128 MB and was not killed" in proc.output()


def test_exit_with_a_code(spawn, model):
    proc = _serving(spawn, model)
    proc.fault_file.write_text("exit:3")
    assert proc.wait_exit() == 3


def test_a_hung_worker_hangs_the_leader(spawn, model):
    group = Group(spawn, model(1000), nnodes=2)
    leader, worker = group.start(0), group.start(1)
    leader.wait_health(200)
    worker.fault_file.write_text("hang")
    wait_for(lambda: "rank 1 hung" in leader.output(), 10, "the leader to see the hang")
    try:
        leader.request("POST", "/v1/completions", {"model": "m", "prompt": "x"}, timeout=2)
        raise AssertionError("a hung group answered")
    except TimeoutError:
        pass
    assert leader.health() == 200
