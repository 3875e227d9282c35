"""Names and group shapes."""

import re

from hypothesis import given
from hypothesis import strategies as st

from darwin_operator import vocabulary
from darwin_operator.topology import shape_of
from darwin_operator.vocabulary import MAX_ENDPOINT_NAME_LENGTH
from tests.specs import spec

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def test_names_are_deterministic():
    assert vocabulary.pod_name("darwin-398b", 1, 2) == "darwin-398b-1-2"
    assert vocabulary.client_service_name("darwin-398b") == "darwin-398b"
    assert vocabulary.headless_service_name("darwin-398b") == "darwin-398b-pods"
    assert vocabulary.pdb_name("darwin-398b") == "darwin-398b-members"


def test_longest_name_leaves_room_for_the_largest_group_and_rank():
    longest = "a" * MAX_ENDPOINT_NAME_LENGTH
    assert MAX_ENDPOINT_NAME_LENGTH == 55
    names = [
        vocabulary.pod_name(longest, vocabulary.MAX_GROUP_INDEX, vocabulary.MAX_RANK),
        vocabulary.headless_service_name(longest),
        vocabulary.client_service_name(longest),
        vocabulary.pdb_name(longest),
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
    assert vocabulary.leader_selector("e") == (
        "serving.darwin.ai/endpoint=e,serving.darwin.ai/role=leader"
    )
    assert vocabulary.group_selector("e", 4) == {
        "serving.darwin.ai/endpoint": "e",
        "serving.darwin.ai/group": "4",
    }
    assert [vocabulary.role_of(rank) for rank in range(3)] == ["leader", "worker", "worker"]


@given(
    name=st.from_regex(r"[a-z]([-a-z0-9]{0,53}[a-z0-9])?", fullmatch=True),
    group=st.integers(0, vocabulary.MAX_GROUP_INDEX),
    rank=st.integers(0, 63),
)
def test_every_derived_name_of_an_allowed_endpoint_name_is_a_dns_label(name, group, rank):
    for derived in (
        vocabulary.pod_name(name, group, rank),
        vocabulary.headless_service_name(name),
        vocabulary.client_service_name(name),
        vocabulary.pdb_name(name),
    ):
        assert len(derived) <= 63 and DNS_LABEL.fullmatch(derived), derived
