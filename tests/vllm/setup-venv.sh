#!/usr/bin/env bash
# Creates (once) the venv holding vLLM, used by tests/vllm/ to check the operator's vLLM
# command lines against vLLM's own argument parser. The operator itself never imports vllm.
#
# The venv is cached outside the repo, at
#   ${DARWIN_CACHE:-$HOME/.cache/darwin-operator}/vllm-<version>/
# It is built in a temporary directory and moved into place only after the install and an
# import check succeeded, with a marker file written last: an interrupted run never leaves a
# venv that looks complete. A complete, working venv is left alone; a missing or broken one is
# rebuilt. Prints the venv's python path (the only line on stdout; progress goes to stderr).
#
# Env: DARWIN_CACHE (cache root), PYTHON (interpreter to build the venv from; python3.11),
#      DARWIN_VLLM_REBUILD=1 (rebuild even when the venv is fine), DARWIN_VLLM_PRUNE=0 (keep
#      the GPU-only packages, see PRUNE).
set -euo pipefail

VLLM_VERSION=0.33.0
PYTHON="${PYTHON:-python3.11}"
CACHE_ROOT="${DARWIN_CACHE:-$HOME/.cache/darwin-operator}"
VENV="$CACHE_ROOT/vllm-$VLLM_VERSION"
MARKER="$VENV/.darwin-vllm-complete"
LOCK="$CACHE_ROOT/.vllm-$VLLM_VERSION.lock"

# GPU kernel, compiler and media packages that vllm==0.33.0 pulls in but its CLI parser never
# imports: removed after the install to save about 3 GB (9.4 GB -> 6.4 GB); the venv only parses
# command lines, it never serves. torch (a CUDA build on PyPI) keeps the NVIDIA libraries it
# links against. Set DARWIN_VLLM_PRUNE=0 to keep everything.
PRUNE=(
    flashinfer-python quack-kernels humming-kernels tilelang tokenspeed-mla tokenspeed-triton
    triton nvidia-cutlass-dsl nvidia-cutlass-dsl-libs-base nvidia-cutlass-dsl-libs-core
    nvidia-cutlass-dsl-libs-cu12 nvidia-cutlass-dsl-libs-cu13 nvidia-cuda-nvcc nvidia-cuda-cccl
    nvidia-cuda-crt nvidia-nvvm torchaudio torchvision torchcodec PyNvVideoCodec
    opencv-python-headless
)

# What tests/vllm/check_serve_args.py needs: vLLM's CLI modules import and build the `serve`
# parser offline and without a GPU (vLLM's CPU platform).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export VLLM_TARGET_DEVICE=cpu
IMPORT_CHECK='
import importlib.metadata as md
assert md.version("vllm") == "'"$VLLM_VERSION"'", md.version("vllm")
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.entrypoints.common.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser
args = make_arg_parser(FlexibleArgumentParser(prog="vllm serve")).parse_args(["m", "-tp", "2"])
assert args.model_tag == "m" and args.tensor_parallel_size == 2, args
'

log() { echo "setup-venv: $*" >&2; }

venv_ok() {
    [[ -f "$MARKER" && -x "$VENV/bin/python" ]] || return 1
    [[ "$(cat "$MARKER")" == "vllm==$VLLM_VERSION" ]] || return 1
    "$VENV/bin/python" -c "$IMPORT_CHECK" >/dev/null 2>&1
}

mkdir -p "$CACHE_ROOT"
exec 9>"$LOCK"
flock 9 # one builder at a time; a second caller waits, then finds the venv done

if [[ "${DARWIN_VLLM_REBUILD:-0}" != 1 ]] && venv_ok; then
    log "vllm $VLLM_VERSION venv is complete: $VENV"
    echo "$VENV/bin/python"
    exit 0
fi

rm -rf "$CACHE_ROOT"/.vllm-"$VLLM_VERSION".tmp.* # leftovers of interrupted runs (we hold the lock)
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null ||
    { log "$PYTHON is not Python 3.11"; exit 1; }

TMP="$CACHE_ROOT/.vllm-$VLLM_VERSION.tmp.$$"
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT

start=$SECONDS
log "building vllm==$VLLM_VERSION venv in $TMP"
"$PYTHON" -m venv "$TMP"
"$TMP/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
# Only a prebuilt vllm wheel: never let pip fall back to compiling vLLM from source.
"$TMP/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
    --only-binary vllm "vllm==$VLLM_VERSION" >&2
if [[ "${DARWIN_VLLM_PRUNE:-1}" != 0 ]]; then
    log "removing packages the parser does not need: ${PRUNE[*]}"
    "$TMP/bin/python" -m pip uninstall --yes --quiet "${PRUNE[@]}" >&2
fi
log "import check"
"$TMP/bin/python" -c "$IMPORT_CHECK"

# A venv's scripts carry its absolute path: point them at the final place, then move there.
{ grep -rlIF --null "$TMP" "$TMP/bin" "$TMP/pyvenv.cfg" || true; } | xargs -0 -r sed -i "s|$TMP|$VENV|g"
rm -rf "$VENV"
mv "$TMP" "$VENV"
"$VENV/bin/python" -c "$IMPORT_CHECK"
echo "vllm==$VLLM_VERSION" >"$MARKER"
log "done in $((SECONDS - start))s; $(du -sh "$VENV" | cut -f1) at $VENV"
echo "$VENV/bin/python"
