"""The stand-in's `vllm serve` command line: vLLM's options, vLLM's refusals."""

from __future__ import annotations

import shlex

import pytest
from vllm_standin import cli

from darwin_operator import engine
from tests.vllm.test_serve_args import CASES, ENDPOINT, LEADER, REFERENCE_ARGS


def test_the_operators_command_lines_parse():
    for name, (spec, rank, launch) in CASES.items():
        if spec.engine.backend.value == "ray":
            continue  # the stand-in has no Ray
        command = engine.container_command(
            spec, endpoint_name=ENDPOINT, rank=rank, leader_address=LEADER
        )
        if command[0] == "bash":  # the wrapper: wait for the leader's DNS, then exec vllm
            command = shlex.split(command[2].split("exec ", 1)[1])
        assert command[:2] == ["vllm", "serve"], name
        args = cli.parse(command[1:])
        assert args.model == engine.model_argument(spec), name  # the hub id, or a staged path
        assert args.headless == (launch == "headless"), name
        assert args.port == engine.HTTP_PORT


def test_values_are_converted_as_vllm_does():
    args = cli.parse(
        [
            "serve",
            "m",
            "--nnodes",
            "3",
            "--node-rank",
            "2",
            "--master-addr",
            "a",
            "--served-model-name",
            "x",
            "y",
            "--max-num-active-seqs",
            "None",
        ]
    )
    assert (args.nnodes, args.node_rank, args.master_addr) == (3, 2, "a")
    assert args.served_model_name == ["x", "y"]
    assert args.max_num_active_seqs is None


def test_underscores_are_dashes():
    assert cli.parse(["serve", "m", "--tensor_parallel_size=4"]).tensor_parallel_size == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [*REFERENCE_ARGS, "--no-such-vllm-flag", "1"],
            "unrecognized arguments: --no-such-vllm-flag",
        ),
        (["m", "--tensor-parallel-size", "notanumber"], "invalid int value: 'notanumber'"),
        (["m", "--port"], "expected one argument"),
    ],
)
def test_a_bad_command_line_is_refused_like_argparse(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse(["serve", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
