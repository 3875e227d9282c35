"""The chart's alerting rules: `promtool check rules`, and `promtool test rules` on the cases of
tests/prometheus/alerts_test.yaml; the PrometheusRule the chart renders holds exactly them."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helm import CHART, REPO, only, render

RULES = CHART / "files" / "alerts.yaml"
CASES = REPO / "tests" / "prometheus" / "alerts_test.yaml"
INSTALL_HINT = "install Prometheus' promtool: `make prometheus-tools` (tests/prometheus/install.sh)"


def promtool() -> str:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if not os.access(found, os.X_OK):
        pytest.fail(f"no promtool: {INSTALL_HINT}")
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([promtool(), *args], text=True, capture_output=True)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


def rules() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_promtool_checks_the_rules():
    run_promtool("check", "rules", str(RULES))


def test_the_chart_renders_exactly_the_rules_file():
    documents = render({"monitoring": {"prometheusRule": {"enabled": True}}})
    spec = only(documents, "PrometheusRule")["spec"]
    assert spec == yaml.safe_load(RULES.read_text())


def _expand(template: str, labels: dict[str, str], value: float) -> str:
    """The two template forms the rules use: {{ $labels.NAME }} and {{ $value }}."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: str(labels.get(m.group(1), "")), template)
    text = text.replace("{{ $value }}", format(value, "g"))
    assert "{{" not in text, f"a template form this test does not expand: {template}"
    return text


def test_every_alert_fires_and_keeps_quiet_as_its_cases_say(tmp_path: Path):
    cases = yaml.safe_load(CASES.read_text())
    by_name = rules()
    filled = copy.deepcopy(cases)
    filled["rule_files"] = [str(RULES)]
    for test in filled["tests"]:
        for check in test["alert_rule_test"]:
            rule = by_name[check["alertname"]]
            for alert in check["exp_alerts"]:
                value = alert.pop("exp_value")
                labels = {k: str(v) for k, v in alert["exp_labels"].items()}
                alert["exp_annotations"] = {
                    key: _expand(text, labels, value) for key, text in rule["annotations"].items()
                }
    path = tmp_path / "alerts_test.yaml"
    path.write_text(yaml.safe_dump(filled, sort_keys=False))
    run_promtool("test", "rules", str(path))


def test_every_alert_has_a_firing_case_and_a_quiet_one():
    checks = [
        check
        for test in yaml.safe_load(CASES.read_text())["tests"]
        for check in test["alert_rule_test"]
    ]
    for name, rule in rules().items():
        mine = [c for c in checks if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no case where it keeps quiet"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), name
