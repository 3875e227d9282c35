"""The planner rolling out in a simulated cluster: pods get Ready after random delays, random
groups fail, the operator is killed part way through its writes, the spec changes again and the
endpoint is scaled mid-rollout. After every single write of the operator the limits hold; every
run ends with every group on the new revision."""

from __future__ import annotations

import math
import os
import random
from dataclasses import replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from darwin_operator import health
from darwin_operator.observed import ObservedPod, groups_from_pods
from tests.unit.planner_fixtures import REF, T0, make_plan, make_spec, observe, revision
from tests.unit.simulated_cluster import GPU, OperatorWrites, b200_nodes

NODES = b200_nodes(6)
MAX_REPLICAS = 5  # a group needs 6 GPUs: 6 nodes always leave room for one surge group


def resolve(value, replicas: int, round_up: bool) -> int:
    """maxUnavailable / maxSurge in groups, as the Deployment documentation says (written
    here independently of the operator's own code)."""
    if isinstance(value, int):
        return value
    exact = int(value[:-1]) * replicas / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def limits(spec) -> tuple[int, int]:
    r = spec.rollout
    unavailable = resolve(r.max_unavailable, spec.replicas, round_up=False)
    surge = resolve(r.max_surge, spec.replicas, round_up=True)
    return (1 if unavailable == surge == 0 else unavailable), surge


class World(OperatorWrites):
    """Pods by name, a clock, a scheduler that binds what fits, pods that get Ready after a
    random delay, and a record of what the limits were checked against."""

    def __init__(self, rng: random.Random, pods_per_group: int) -> None:
        self.nodes = NODES
        self.pods: dict[str, ObservedPod] = {}
        self.objects: dict[str, dict] = {}  # as the API server stores them
        self.ready_at: dict[str, float] = {}
        self.now = T0
        self.history = health.History()
        self.rng = rng
        self.pods_per_group = pods_per_group
        self.rolling = False  # status.rolloutStartedAt is set
        self.scaled_down = False  # groups above a scale-down leave at once: not the rollout's
        self.checked = 0

    # -- what the limits are about --

    def available(self) -> set[int]:
        return {
            g.index
            for g in groups_from_pods(self.pods.values(), REF.uid)
            if len(g.pods) == self.pods_per_group
            and all(p.ready and not p.deleting and p.phase == "Running" for p in g.pods)
            and g.leader is not None
            and g.leader.serving == "true"
        }

    def group_count(self) -> int:
        return len({p.group for p in self.pods.values()})

    def checked_write(self, spec, write) -> None:
        unavailable, surge = limits(spec)
        before, groups = self.available(), {p.group for p in self.pods.values()}
        write()
        after = self.available()
        down = before - after  # groups the operator took down
        if down and (self.scaled_down is False or min(down) < spec.replicas):
            assert len(after) >= spec.replicas - unavailable, (
                f"took {sorted(before - after)} down leaving {sorted(after)} "
                f"(replicas {spec.replicas}, maxUnavailable {unavailable})"
            )
        created = {p.group for p in self.pods.values()} - groups
        # A wanted index is always (re)created; while groups above a scale-down still drain
        # that may be one more than replicas + maxSurge for a moment (it waits gated if the
        # GPUs are not free). Groups the rollout adds on top must fit in that room.
        if any(index >= spec.replicas for index in created):
            assert self.group_count() <= spec.replicas + surge, (
                f"{self.group_count()} groups, replicas {spec.replicas} + maxSurge {surge}"
            )
        self.checked += 1

    # -- the rest of the cluster --

    def tick(self) -> None:
        """Deleted pods go, released pods are bound where they fit, and bound pods turn Ready
        after their own random delay (weights take their time)."""
        self.pods = {n: p for n, p in self.pods.items() if not p.deleting}
        free = {n.name: 8 for n in NODES}
        for p in self.pods.values():
            if p.bound:
                free[p.node_name] -= p.requests(GPU)
        for name, p in sorted(self.pods.items()):
            if p.bound or p.gated:
                continue
            node = next((n for n, f in sorted(free.items()) if f >= p.requests(GPU)), None)
            if node is not None:
                free[node] -= p.requests(GPU)
                self.pods[name] = replace(p, node_name=node, phase="Running")
                self.ready_at[name] = self.now + self.rng.choice((0, 5, 20, 60, 120))
        for name, p in self.pods.items():
            if p.bound and p.phase == "Running" and self.now >= self.ready_at.get(name, 0):
                self.pods[name] = replace(p, ready=True)
        assert all(f >= 0 for f in free.values())
        self.now += self.rng.choice((2, 5, 10, 20))

    def fail(self, choice: int, how: str) -> None:
        """A running group breaks: a member fails, or one is lost (deleted by someone else)."""
        running = sorted({p.group for p in self.pods.values() if p.bound and not p.deleting})
        if not running:
            return
        index = running[choice % len(running)]
        name = next(n for n, p in sorted(self.pods.items()) if p.group == index)
        if how == "failed":
            self.patch(name, phase="Failed", ready=False)
        else:
            del self.pods[name]


def reconcile(world: World, spec, crash_seed: int | None = None) -> bool:
    """One reconcile, every write checked against the limits; with a seed, the operator dies
    after a random number of its writes. Returns whether it had nothing left to do."""
    observed = observe(spec, list(world.pods.values()))
    plan = make_plan(
        spec,
        observed,
        now=world.now,
        history=world.history,
        rollout_in_progress=world.rolling,
        scheduling_timeout=120,
    )
    writes, deletes = world.writes_for(spec, plan)
    if crash_seed is not None:
        rng = random.Random(crash_seed)
        rng.shuffle(writes)  # concurrent writes: any subset may land
        rng.shuffle(deletes)
        landed = (writes + deletes)[: rng.randint(0, len(writes) + len(deletes))]
        for write in landed:
            world.checked_write(spec, write)
        return False
    for write in writes + deletes + world.admission_writes(plan):
        world.checked_write(spec, write)
    world.history = plan.health  # the status patch, after the actions
    world.rolling = plan.rollout.rolling
    return not plan.actions and not plan.admissions and plan.requeue_after is None


def converge(world: World, spec, rounds: int = 600) -> None:
    for _ in range(rounds):
        quiet = reconcile(world, spec)
        world.tick()
        if quiet and reconcile(world, spec):
            return
    raise AssertionError(f"did not converge; groups: {sorted(world.available())}")


def spec_for(replicas, image, rollout, pods_per_group):
    return make_spec(
        replicas=replicas,
        engine={"tensorParallelSize": 2, "pipelineParallelSize": 3, "image": image},
        placement={"podsPerGroup": pods_per_group},
        rollout=rollout,
        health={"maxGroupRestarts": 1000},  # failures are random here; never Failed
    )


MOVES = st.one_of(
    st.tuples(st.just("tick"), st.integers(1, 6)),
    st.tuples(st.just("crash"), st.integers(0, 1 << 20)),
    st.tuples(st.just("fail"), st.integers(0, 9), st.sampled_from(["failed", "lost"])),
    st.tuples(st.just("image"), st.integers(2, 4)),
    st.tuples(st.just("scale"), st.integers(1, MAX_REPLICAS)),
    st.tuples(st.just("pause"), st.booleans()),
)


@settings(
    max_examples=int(os.environ.get("ROLLOUT_SIM_EXAMPLES", 200)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    replicas=st.integers(1, MAX_REPLICAS),
    max_unavailable=st.sampled_from([0, 1, 2, "25%", "50%", "100%"]),
    max_surge=st.sampled_from([0, 1, 2, "50%"]),
    partition=st.integers(0, 2),
    drain=st.sampled_from([0, 5, 30]),
    pods_per_group=st.sampled_from([1, 3]),
    moves=st.lists(MOVES, max_size=30),
    seed=st.integers(0, 1 << 20),
)
def test_rollouts_keep_the_limits_at_every_write_and_always_finish(
    replicas, max_unavailable, max_surge, partition, drain, pods_per_group, moves, seed
):
    assume(not (max_unavailable == 0 and max_surge == 0))  # the CRD refuses it
    rollout = {
        "maxUnavailable": max_unavailable,
        "maxSurge": max_surge,
        "partition": min(partition, replicas),
        "drainSeconds": drain,
    }
    world = World(random.Random(seed), pods_per_group)
    spec = spec_for(replicas, "vllm/vllm-openai:v0", rollout, pods_per_group)
    converge(world, spec)
    image = "vllm/vllm-openai:v1"
    spec = spec_for(replicas, image, rollout, pods_per_group)
    for move in moves:
        match move:
            case ("tick", n):
                for _ in range(n):
                    reconcile(world, spec)
                    world.tick()
            case ("crash", crash_seed):
                reconcile(world, spec, crash_seed)
                world.tick()
            case ("fail", choice, how):
                world.fail(choice, how)
            case ("image", tag):
                image = f"vllm/vllm-openai:v{tag}"
            case ("scale", count):
                world.scaled_down |= count < replicas
                replicas = count
                rollout["partition"] = min(rollout["partition"], count)
            case ("pause", paused):
                rollout["paused"] = paused
        spec = spec_for(replicas, image, rollout, pods_per_group)
    rollout["paused"] = False
    spec = spec_for(replicas, image, rollout, pods_per_group)
    converge(world, spec)

    groups = groups_from_pods(world.pods.values(), REF.uid)
    assert [g.index for g in groups] == list(range(replicas))  # no orphan, no surge left over
    assert world.available() == set(range(replicas))
    for g in groups:
        assert sorted(g.ranks()) == list(range(pods_per_group))
        if g.index >= rollout["partition"]:
            assert {p.revision for p in g.pods} == {revision(spec)}
    assert world.checked > 0
