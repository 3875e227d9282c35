#!/usr/bin/env bash
# Builds the test images (docker-archive tars, cached under ~/.cache/darwin-operator/images) and
# prints their paths, one a line: `tests/images/build.sh vllm-standin`. See images.py.
# Needs root and debootstrap (`apt-get install debootstrap`) for the first build of a base rootfs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v debootstrap >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "images: installing debootstrap" >&2
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq debootstrap >&2
fi
exec "${PYTHON:-python3}" "$here/images.py" "$@"
