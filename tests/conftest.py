"""Shared test configuration: the source root and the local-cluster tools on sys.path."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO / "operator", REPO / "tests" / "cluster"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
