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
    ["m", "--served-model-name"],
    ["m", "--enable-prefix-caching", "--disable-prefix-caching"],
    ["m", "--no-enable-prefix-caching"],
    ["m", "-O3"],
    ["m", "--max-model-len", "18k"],
    ["m", "--dtype", "bfloat17"],
    ["m", "--nnodes", "2", "--node-rank", "1", "--master-addr", "a", "--headless"],
    ["m", "--shutdown-timeout", "30"],
]


@pytest.fixture(scope="module")
def vllm_answers() -> dict:
    """vLLM's own flag list and its verdicts on PROBES, from two processes run side by side
    (each imports vllm, which takes minutes here)."""
    python = str(vllm_python())
    dump = subprocess.Popen([python, str(DUMP)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    check = subprocess.Popen(
        [python, str(CHECKER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    verdicts, check_err = check.communicate(json.dumps(PROBES).encode(), timeout=900)
    flags, dump_err = dump.communicate(timeout=900)
    assert dump.returncode == 0, dump_err.decode()[-4000:]
    assert check.returncode == 0, check_err.decode()[-4000:]
    return {"flags": json.loads(flags), "verdicts": json.loads(verdicts)}


def test_the_flag_list_is_vllms(vllm_answers):
    regenerate = f"regenerate: {vllm_python()} {DUMP} > {cli.FLAGS}"
    assert vllm_answers["flags"] == json.loads(cli.FLAGS.read_text()), regenerate


@pytest.mark.parametrize("index", range(len(PROBES)))
def test_both_parsers_agree(vllm_answers, index, capsys):
    argv = PROBES[index]
    verdict = vllm_answers["verdicts"][index]
    vllm_refused_parsing = not verdict["ok"] and ": error: " in verdict["error"]
    try:
        cli.parse(["serve", *argv])
        standin_refused = False
    except SystemExit as e:
        standin_refused = e.code != 0
    assert standin_refused == vllm_refused_parsing, (argv, verdict["error"], capsys.readouterr())
