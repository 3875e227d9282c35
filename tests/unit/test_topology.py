"""Names and group shapes."""

import re

from hypothesis import given
from hypothesis import strategies as st

from darwin_operator import topology
from darwin_operator.topology import MAX_ENDPOINT_NAME_LENGTH, shape_of
from tests.unit.specs import spec

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def test_names_are_deterministic():
    assert topology.pod_name("darwin-398b", 1, 2) == "darwin-398b-1-2"
    assert topology.client_service_name("darwin-398b") == "darwin-398b"
    assert topology.headless_service_name("darwin-398b") == "darwin-398b-pods"
    assert topology.pdb_name("darwin-398b") == "darwin-398b-leaders"


def test_longest_name_leaves_room_for_the_largest_group_and_rank():
    longest = "a" * MAX_ENDPOINT_NAME_LENGTH
    assert MAX_ENDPOINT_NAME_LENGTH == 55
    names = [
        topology.pod_name(longest, topology.MAX_GROUP_INDEX, topology.MAX_RANK),
        topology.headless_service_name(longest),
        topology.client_service_name(longest),
        topology.pdb_name(longest),
    ]
    assert max(len(name) for name in names) == 63


def test_reference_shape_is_one_pod_with_six_gpus():
    shape = shape_of(spec())
    assert (shape.pods_per_group, shape.gpus_per_pod, shape.tp, shape.pp) == (1, 6, 2, 3)
    assert shape.gpus == 6 and list(shape.ranks) == [0]


def test_a_pod_per_stage_holds_one_tensor_parallel_group():
    shape = shape_of(spec(placement={"podsPerGroup": 3}))
    assert (shape.pods_per_group, shape.gpus_per_pod, shape.stages_per_pod) == (3, 2, 1)


def test_selectors():
    assert topology.leader_selector("e") == (
        "serving.darwin.ai/endpoint=e,serving.darwin.ai/role=leader"
    )
    assert topology.group_selector("e", 4) == {
        "serving.darwin.ai/endpoint": "e",
        "serving.darwin.ai/group": "4",
    }
    assert [topology.role_of(rank) for rank in range(3)] == ["leader", "worker", "worker"]


@given(
    name=st.from_regex(r"[a-z]([-a-z0-9]{0,53}[a-z0-9])?", fullmatch=True),
    group=st.integers(0, topology.MAX_GROUP_INDEX),
    rank=st.integers(0, 63),
)
def test_every_derived_name_of_an_allowed_endpoint_name_is_a_dns_label(name, group, rank):
    for derived in (
        topology.pod_name(name, group, rank),
        topology.headless_service_name(name),
        topology.client_service_name(name),
        topology.pdb_name(name),
    ):
        assert len(derived) <= 63 and DNS_LABEL.fullmatch(derived), derived
