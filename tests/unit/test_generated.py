"""The checked-in CRDs are exactly what the models generate."""

from pathlib import Path

import pytest

from darwin_operator.crd import crd_yaml

REPO = Path(__file__).resolve().parents[2]
GENERATED = [
    "crds/serving.darwin.ai_darwinendpoints.yaml",
    "charts/darwin-operator/crds/serving.darwin.ai_darwinendpoints.yaml",
]


@pytest.mark.parametrize("path", GENERATED)
def test_checked_in_crd_matches_the_models(path):
    assert (REPO / path).read_text() == crd_yaml(), (
        f"{path} is out of date with operator/darwin_operator/api.py: run `make generate`"
    )
