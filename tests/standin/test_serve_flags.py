"""The stand-in's options are vLLM 0.33.0's: the checked-in list is what vLLM's parser has, and
both parsers accept and refuse the same command lines.

Needs the vLLM venv of tests/vllm/setup-venv.sh (as tests/vllm/test_serve_args.py does).
After a vLLM upgrade, regenerate the list with the command in dump_serve_flags.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from vllm_standin import cli

from tests.vllm.test_serve_args import CHECKER, REFERENCE_ARGS, vllm_python

HERE = Path(__file__).resolve().parent
DUMP = HERE / "dump_serve_flags.py"

# Command lines that only the parser decides about (no model config, no engine checks).
PROBES: list[list[str]] = [
    REFERENCE_ARGS,
    [*REFERENCE_ARGS, "--no-such-vllm-flag", "1"],
    ["m", "--tensor_parallel_size", "2"],
    ["m", "--tensor-parallel", "2"],  # an abbreviation
    ["m", "-tp", "2", "-pp", "3"],
    ["m", "--port", "notaport"],
    ["m", "--max-model-len", "None"],
    ["m", "--served-model-name"],
    ["m", "--enable-prefix-caching", "--no-enable-prefix-caching"],
    ["m", "--dtype", "bfloat17"],
    ["m", "--nnodes", "2", "--node-rank", "1", "--master-addr", "a", "--headless"],
    ["m", "--shutdown-timeout", "30"],
]


def test_the_flag_list_is_vllms():
    run = subprocess.run(
        [str(vllm_python()), str(DUMP)], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-4000:]
    regenerate = f"regenerate: {vllm_python()} {DUMP.relative_to(HERE.parent.parent)} > {cli.FLAGS}"
    assert json.loads(run.stdout) == json.loads(cli.FLAGS.read_text()), regenerate


@pytest.fixture(scope="module")
def vllm_verdicts() -> list[dict]:
    run = subprocess.run(
        [str(vllm_python()), str(CHECKER)],
        input=json.dumps(PROBES),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout)


@pytest.mark.parametrize("index", range(len(PROBES)))
def test_both_parsers_agree(vllm_verdicts, index, capsys):
    argv = PROBES[index]
    verdict = vllm_verdicts[index]
    vllm_refused_parsing = not verdict["ok"] and ": error: " in verdict["error"]
    try:
        cli.parse(["serve", *argv])
        standin_refused = False
    except SystemExit as e:
        standin_refused = e.code != 0
    assert standin_refused == vllm_refused_parsing, (argv, verdict["error"], capsys.readouterr())
