#!/usr/bin/env bash
# Installs what real kubelet nodes need from Debian (container runtime, CNI plugins, iptables,
# conntrack), and buildah, which builds the operator image for them from operator/Dockerfile
# (tests/images/operator_image.py). Idempotent: does nothing when every package is already installed.
set -euo pipefail
packages=(containerd runc containernetworking-plugins iptables conntrack iproute2 util-linux busybox-static nftables buildah)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-node-packages: missing ${missing[*]}; run as root to install them" >&2
  exit 1
fi
echo "install-node-packages: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
