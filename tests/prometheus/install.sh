#!/usr/bin/env bash
# Installs Prometheus and promtool from Debian's `prometheus` package when either is missing
# (idempotent). The unit tests run promtool; the e2e tests start /usr/bin/prometheus themselves,
# on a free loopback port with a temporary storage directory, and never use the system service
# the package may set up.
set -euo pipefail
if [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; then
  exit 0
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
echo "prometheus-tools: apt-get install prometheus" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
/usr/bin/promtool --version | head -1 >&2
