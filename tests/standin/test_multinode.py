"""Ranks of one instance: rendezvous on the leader, the leader's death with a rank, timeouts."""

from __future__ import annotations

import signal

from tests.standin.standin_process import Group, wait_for


def test_the_leader_serves_once_every_rank_joined(spawn, model):
    group = Group(spawn, model(1 << 20))
    leader, first = group.start(0), group.start(1)
    wait_for(lambda: "rank 1 joined (2/3)" in leader.output(), 30, "rank 1 to join")
    assert leader.health() is None, "the leader listens before rank 2 joined"

    second = group.start(2)
    leader.wait_health(200)
    for worker in (first, second):
        assert "all 3 ranks joined" in worker.output()
        assert "Model loading took" in worker.output()
        assert "Starting vLLM API server" not in worker.output()  # headless ranks never listen
    status, _, _ = leader.request("POST", "/v1/completions", {"model": "m", "prompt": "x"})
    assert status == 200


def test_a_dead_rank_kills_the_leaders_engine(spawn, model):
    group = Group(spawn, model(1000), env={"STANDIN_DEATH_EXIT_SECONDS": "1.5"})
    leader, first, second = (group.start(rank) for rank in range(3))
    leader.wait_health(200)

    first.signal(signal.SIGKILL)
    leader.wait_health(503)
    assert leader.wait_exit() == 1
    assert "rank 1 disconnected" in leader.output()
    assert second.wait_exit() == 1  # the leader went away: the last rank fails too
    assert "the leader went away" in second.output()


def test_keep_alive_on_engine_death_keeps_answering_503(spawn, model):
    env = {"VLLM_KEEP_ALIVE_ON_ENGINE_DEATH": "1", "STANDIN_DEATH_EXIT_SECONDS": "0"}
    group = Group(spawn, model(1000), nnodes=2, env=env)
    leader, worker = group.start(0), group.start(1)
    leader.wait_health(200)
    worker.signal(signal.SIGKILL)
    leader.wait_health(503)
    for _ in range(5):  # well past the 0 s after which it would otherwise have exited
        assert leader.health() == 503
    assert leader.proc.poll() is None


def test_the_leader_times_out_waiting_for_ranks(spawn, model):
    group = Group(spawn, model(1000), timeout=1)
    leader, _ = group.start(0), group.start(1)
    assert leader.wait_exit() == 1
    assert "Timed out after 1 seconds waiting for clients. 2/3 clients joined." in leader.output()


def test_a_rank_times_out_without_a_leader(spawn, model):
    worker = Group(spawn, model(1000), timeout=1).start(2)
    assert worker.wait_exit() == 1
    assert "timed out after 1s while trying to connect" in worker.output()


def test_a_rank_of_another_size_is_refused(spawn, model):
    group = Group(spawn, model(1000), nnodes=2, timeout=2)
    leader = group.start(0)
    wrong = Group(spawn, model(1000, "other"), nnodes=3, timeout=2)
    wrong.common[wrong.common.index("--master-port") + 1] = group.common[
        group.common.index("--master-port") + 1
    ]
    stranger = wrong.start(1)
    assert stranger.wait_exit() == 1
    assert "says --nnodes 3, the leader 2" in stranger.output()
    assert leader.wait_exit() == 1  # and rank 1 never came
