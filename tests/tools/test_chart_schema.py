"""Bad values fail `helm template` (and so `helm install`) with a message naming the value."""

from __future__ import annotations

import pytest

from tests.helm import template

REJECTED = {
    "negative replicas": ({"replicaCount": -1}, "/replicaCount"),
    "namespaces not a list": ({"watch": {"namespaces": "x"}}, "/watch/namespaces"),
    "bad pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "unknown scope": ({"watch": {"scope": "everywhere"}}, "/watch/scope"),
    "namespaced without namespaces": ({"watch": {"scope": "namespaces"}}, "/watch/namespaces"),
    "namespace not a DNS label": (
        {"watch": {"scope": "namespaces", "namespaces": ["Team_A"]}},
        "/watch/namespaces/0",
    ),
    "typo in a key": ({"replicas": 2}, "additional properties 'replicas'"),
    "lifetime shorter than a keep-alive": ({"peering": {"lifetime": 5}}, "/peering/lifetime"),
    "port out of range": ({"metrics": {"port": 70000}}, "/metrics/port"),
    "digest not a digest": ({"image": {"digest": "latest"}}, "/image/digest"),
    "namespaces ignored in cluster scope": (
        {"watch": {"namespaces": ["team-a"]}},
        'watch.scope is "cluster"',
    ),
    "service monitor without its service": (
        {
            "monitoring": {"serviceMonitor": {"enabled": True}},
            "metrics": {"service": {"enabled": False}},
        },
        "needs metrics.service.enabled",
    ),
}


@pytest.mark.parametrize(("values", "message"), REJECTED.values(), ids=REJECTED.keys())
def test_bad_values_are_rejected_with_a_clear_message(values, message):
    _, result = template(values, check=False)
    assert result.returncode != 0, f"accepted {values}"
    assert message in result.stderr, result.stderr
