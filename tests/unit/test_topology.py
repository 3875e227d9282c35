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


def test_each_incarnation_has_names_and_dns_names_of_its_own():
    # the first incarnation keeps the names groups always had (adopted on upgrade)
    assert vocabulary.pod_name("darwin-398b", 1, 2, 0) == "darwin-398b-1-2"
    assert vocabulary.pod_name("darwin-398b", 1, 2, 3) == "darwin-398b-1-2-3"
    longest = "e" * vocabulary.MAX_ENDPOINT_NAME_LENGTH
    hosts = {
        vocabulary.pod_hostname(longest, group, rank, incarnation)
        for group in (1, 12, 9999)
        for rank in (0, 1, 2, 99)
        for incarnation in (0, 1, 12, 123456)
    }
    assert len(hosts) == 3 * 4 * 4  # never one DNS name for two pods of an endpoint
    assert all(len(h) <= vocabulary.DNS_LABEL_MAX_LENGTH for h in hosts)
    assert vocabulary.pod_hostname("darwin-398b", 1, 0, 2) == "darwin-398b-1-0-2"
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
        "serving.darwin.ai/incarnation": "0",
    }
    assert vocabulary.group_selector("e", 4, 7)["serving.darwin.ai/incarnation"] == "7"
    assert [vocabulary.role_of(rank) for rank in range(3)] == ["leader", "worker", "worker"]


@given(
    name=st.from_regex(r"[a-z]([-a-z0-9]{0,53}[a-z0-9])?", fullmatch=True),
    group=st.integers(0, vocabulary.MAX_GROUP_INDEX),
    rank=st.integers(0, 63),
    incarnation=st.integers(0, 10**9),
)
def test_every_derived_name_of_an_allowed_endpoint_name_is_a_dns_label(
    name, group, rank, incarnation
):
    pod = vocabulary.pod_name(name, group, rank, incarnation)
    assert len(pod) <= 253 and all(DNS_LABEL.fullmatch(part) for part in pod.split("."))
    for derived in (
        vocabulary.pod_name(name, group, rank),
        vocabulary.pod_hostname(name, group, rank, incarnation),
        vocabulary.headless_service_name(name),
        vocabulary.client_service_name(name),
        vocabulary.pdb_name(name),
    ):
        assert len(derived) <= 63 and DNS_LABEL.fullmatch(derived), derived
