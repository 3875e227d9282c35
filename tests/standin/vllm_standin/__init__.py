"""A stand-in for vLLM 0.33.0's `vllm serve`, for darwin-operator's tests only (stdlib only).

It is test tooling, not an inference server: it takes vLLM's command line, "loads" a model by
reading its files, joins the ranks of a multi-node group, and serves vLLM's HTTP surface with
canned completions, so that the operator's pods can run on real kubelets without GPUs. See
tests/standin/README.md.
"""

VERSION = "0.33.0"
