"""Gang admission across endpoints: serialized decisions, batched on one read of the cluster,
with the gates lifted outside the lock."""

from __future__ import annotations

import asyncio

from darwin_operator import writes
from darwin_operator.admission import Admitter
from darwin_operator.capacity import Fit, GroupDemand
from darwin_operator.observed import Placement
from darwin_operator.planner import Admission
from darwin_operator.render import EndpointRef

GPU = "nvidia.com/gpu"


def node(name: str) -> dict:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "NVIDIA-B200"}},
        "status": {"allocatable": {GPU: "8"}, "conditions": [{"type": "Ready", "status": "True"}]},
    }


class FakeCluster:
    """Nodes with 8 GPUs each; lifting a gate binds nothing, but the pod then counts as taken."""

    def __init__(self, nodes: int) -> None:
        self.nodes = [node(f"n{i}") for i in range(nodes)]
        self.pods: list[dict] = []
        self.reads = 0
        self.ungated: list[str] = []
        self.held: dict[str, str] = {}  # pod -> the node its gate-lifting write holds it to

    async def capacity_inputs(self):
        self.reads += 1
        await asyncio.sleep(0.01)
        return self.nodes, list(self.pods)

    async def write_pods(self, namespace, pod_writes):
        await asyncio.sleep(0.01)
        pod_writes = list(pod_writes)
        self.held.update({w.name: w.node for w in pod_writes if isinstance(w, writes.PatchPod)})
        names = [w.name for w in pod_writes if isinstance(w, writes.PatchPod) and w.ungate]
        for name in names:
            self.ungated.append(name)
            self.pods.append(
                {
                    "metadata": {"name": name},
                    "spec": {
                        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-B200"},
                        "containers": [{"name": "c", "resources": {"limits": {GPU: "4"}}}],
                    },
                }
            )
        return len(names)


def admissions(endpoint: str, groups: int) -> tuple[Admission, ...]:
    demand = GroupDemand(
        pods=3,
        gpus_per_pod=4,
        placement=Placement(node_selector=(("nvidia.com/gpu.product", "NVIDIA-B200"),)),
    )
    return tuple(
        Admission(i, demand, tuple(f"{endpoint}-{i}-{r}" for r in range(3))) for i in range(groups)
    )


def test_competing_endpoints_never_both_get_the_last_gpus_and_share_one_read():
    async def scenario():
        cluster = FakeCluster(nodes=2)  # 16 GPUs: one group of 3 x 4 GPUs, not two
        admitter = Admitter(cluster, clock=lambda: 0.0)
        names = ["alpha", "beta", "gamma"]
        results = await asyncio.gather(
            *(admitter.admit(EndpointRef(n, "ns", n), GPU, admissions(n, 1)) for n in names)
        )
        return cluster, dict(zip(names, results, strict=True))

    cluster, results = asyncio.run(scenario())
    admitted = [n for n, fits in results.items() if fits[0].fits]
    assert admitted == ["alpha"]  # the first to ask
    assert cluster.ungated == ["alpha-0-0", "alpha-0-1", "alpha-0-2"]
    # each pod is held to the node admission counted it on: 3 x 4 GPUs on two 8-GPU nodes
    assert [cluster.held[n] for n in cluster.ungated] == list(results["alpha"][0].nodes)
    assert sorted(cluster.held.values()) == ["n0", "n0", "n1"]
    assert "free: 4 GPUs on 2 eligible nodes (largest 4)" in results["beta"][0].message
    assert cluster.reads <= 2  # the queued requests were decided together


def test_later_batches_see_the_gates_lifted_by_earlier_ones():
    async def scenario():
        cluster = FakeCluster(nodes=4)  # 32 GPUs: two groups of 12
        admitter = Admitter(cluster, clock=lambda: 0.0)
        first = await admitter.admit(EndpointRef("a", "ns", "a"), GPU, admissions("a", 1))
        second = await admitter.admit(EndpointRef("b", "ns", "b"), GPU, admissions("b", 2))
        return first, second

    first, second = asyncio.run(scenario())
    assert [f.fits for f in first] == [True]
    assert [f.fits for f in second] == [True, False]


def test_a_failed_read_fails_every_request_of_the_batch_and_the_next_one_retries():
    class Flaky(FakeCluster):
        async def capacity_inputs(self):
            self.reads += 1
            if self.reads == 1:
                raise RuntimeError("apiserver unavailable")
            return await super().capacity_inputs()

    async def scenario():
        cluster = Flaky(nodes=2)
        admitter = Admitter(cluster, clock=lambda: 0.0)
        try:
            await admitter.admit(EndpointRef("a", "ns", "a"), GPU, admissions("a", 1))
        except RuntimeError as error:
            failed = str(error)
        retried = await admitter.admit(EndpointRef("a", "ns", "a"), GPU, admissions("a", 1))
        return failed, retried

    failed, retried = asyncio.run(scenario())
    assert failed == "apiserver unavailable"
    assert retried[0].fits


def test_the_next_batch_decides_while_gates_are_being_lifted_and_counts_them_as_taken():
    class SlowWrites(FakeCluster):
        """Lifting gates takes a while; records what each batch decision saw in flight."""

        def __init__(self, nodes: int) -> None:
            super().__init__(nodes)
            self.writing = 0
            self.reads_while_writing = 0

        async def capacity_inputs(self):
            self.reads_while_writing += self.writing > 0
            return await super().capacity_inputs()

        async def write_pods(self, namespace, pod_writes):
            self.writing += 1
            await asyncio.sleep(0.2)
            self.writing -= 1
            return await super().write_pods(namespace, pod_writes)

    async def scenario():
        cluster = SlowWrites(nodes=3)  # 24 GPUs: two groups of 3 x 4 GPUs, not three
        admitter = Admitter(cluster, clock=lambda: 0.0)
        first = asyncio.create_task(
            admitter.admit(EndpointRef("a", "ns", "a"), GPU, admissions("a", 1))
        )
        await asyncio.sleep(0.05)  # a's gates are being lifted
        later = await asyncio.gather(
            admitter.admit(EndpointRef("b", "ns", "b"), GPU, admissions("b", 1)),
            admitter.admit(EndpointRef("c", "ns", "c"), GPU, admissions("c", 1)),
        )
        return cluster, await first, later

    cluster, first, (second, third) = asyncio.run(scenario())
    assert cluster.reads_while_writing >= 1  # decided while a's write was in flight
    assert [first[0].fits, second[0].fits, third[0].fits] == [True, True, False]
    assert "free:" in third[0].message
    # never more than a node's 8 GPUs held to it
    per_node: dict[str, int] = {}
    for node_name in cluster.held.values():
        per_node[node_name] = per_node.get(node_name, 0) + 4
    assert max(per_node.values()) <= 8


def test_a_release_outlives_the_cancelled_caller_that_ran_its_batch_and_answers_its_own():
    """Endpoint b's group is let go by the batch endpoint a's call ran; a's reconcile is then
    cancelled (a deleted, the operator stopping): b's release still ends, whole, and b gets
    the answer, with its release's own word for a group it could not let go."""

    async def scenario():
        cluster = FakeCluster(nodes=4)
        admitter = Admitter(cluster, clock=lambda: 0.0)
        started, finish = asyncio.Event(), asyncio.Event()
        released: list[int] = []

        async def create_slowly(admission, fit):
            started.set()
            await finish.wait()
            released.append(admission.index)
            return None if admission.index == 0 else Fit(False, (), "could not be created")

        await admitter._lock.acquire()  # both requests queue up behind one batch
        a = asyncio.create_task(admitter.admit(EndpointRef("a", "ns", "a"), GPU, ()))
        b = asyncio.create_task(
            admitter.admit(EndpointRef("b", "ns", "b"), GPU, admissions("b", 2), create_slowly)
        )
        await asyncio.sleep(0.01)
        admitter._lock.release()  # a's call takes the lock first and runs the batch
        await asyncio.wait_for(started.wait(), 1)
        a.cancel()
        await asyncio.sleep(0.01)
        finish.set()
        return await asyncio.wait_for(b, 1), released, admitter._in_flight

    answers, released, in_flight = asyncio.run(scenario())
    assert sorted(released) == [0, 1]  # both of b's groups went through their release
    assert [f.fits for f in answers] == [True, False]
    assert answers[1].message == "could not be created"
    assert in_flight == {}  # and their places were given up only after


def test_a_node_cordoned_between_batches_is_not_used_by_the_next():
    async def scenario():
        cluster = FakeCluster(nodes=2)
        admitter = Admitter(cluster, clock=lambda: 0.0)
        first = await admitter.admit(EndpointRef("a", "ns", "a"), GPU, admissions("a", 1))
        for n in cluster.nodes:
            n["spec"] = {"unschedulable": True}
        second = await admitter.admit(EndpointRef("b", "ns", "b"), GPU, admissions("b", 1))
        return first, second

    first, second = asyncio.run(scenario())
    assert first[0].fits
    assert not second[0].fits and "2 cordoned" in second[0].message
