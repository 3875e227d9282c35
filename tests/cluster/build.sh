#!/usr/bin/env bash
# Builds the test control plane from the official Go modules at pinned versions into a cache outside
# the repo. Each component is built only when its binary for that version is missing, so a machine
# pays the cold build once.
# Usage: build.sh [kubernetes|etcd|kwok|helm|prometheus-crds|node|coredns|lws]...
# (default: all but node and coredns, which only real nodes need, and lws, which only
# bench/bench_vs_lws.py needs)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${DARWIN_CACHE:-$HOME/.cache/darwin-operator}
export GOMODCACHE=$cache/go/mod GOCACHE=$cache/go/build GOFLAGS=-modcacherw CGO_ENABLED=0 GOTOOLCHAIN=local
bin=$cache/bin

log() { echo "build: $*" >&2; }

# Runs a build into a temporary directory and moves it in place only when it succeeded, so an
# interrupted build never leaves a half-filled version directory that looks complete.
install_dir() {  # install_dir DEST CMD...
  local dest=$1; shift
  local tmp="$dest.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  "$@" "$tmp"
  rm -rf "$dest"; mv "$tmp" "$dest"
}

# Version ldflags so that /version (and a node's kubeletVersion) tell the truth.
k8s_ldflags() {
  local minor=${K8S_VERSION#v1.} pkg flags=""; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "-s -w$flags"
}

build_k8s_cmds() {  # build_k8s_cmds DEST_DIR CHECK_BINARY CMD...
  local dest=$1 check=$2; shift 2
  [ -x "$dest/$check" ] && return
  log "$(basename "$dest") ($*)"
  local pkgs=() cmd
  for cmd in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  _go_build() {
    (cd "$here/build/kubernetes" && go build -trimpath -ldflags "$(k8s_ldflags)" -o "$1/" "${pkgs[@]}")
  }
  install_dir "$dest" _go_build
}

# The control plane (cold: tens of minutes on 2 cores).
build_kubernetes() {
  build_k8s_cmds "$bin/kubernetes-$K8S_VERSION" kubectl \
    kube-apiserver kube-controller-manager kube-scheduler kubectl
}

# What a real node runs (same module and build cache as the control plane: ~2 minutes after it).
build_node() {
  build_k8s_cmds "$bin/kubernetes-node-$K8S_VERSION" kube-proxy kubelet kube-proxy
}

build_etcd() {
  local dest=$bin/etcd-$ETCD_VERSION
  [ -x "$dest/etcd" ] && return
  log "etcd $ETCD_VERSION"
  _go_build() {
    (cd "$here/build/etcd" && go build -trimpath -ldflags "-s -w" -o "$1/etcd" go.etcd.io/etcd/server/v3)
  }
  install_dir "$dest" _go_build
}

build_installable() {  # build_installable NAME VERSION PACKAGE [LDFLAGS]
  local name=$1 version=$2 pkg=$3 extra=${4:-} dest=$bin/$1-$2
  [ -x "$dest/$name" ] && return
  log "$name $version"
  _go_install() { GOBIN=$1 go install -trimpath -ldflags "-s -w $extra" "$pkg@$version"; }
  install_dir "$dest" _go_install
}

# CoreDNS (cluster DNS of the real nodes); its module needs Go >= 1.26.
build_coredns() { build_installable coredns "$COREDNS_VERSION" github.com/coredns/coredns; }
build_kwok() { build_installable kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok; }
# helm's own release build stamps its version and the Kubernetes version its client modules speak
# (lint and `helm template` check a chart's kubeVersion against it); do the same.
build_helm() {
  local h=helm.sh/helm/v3 k8s_minor
  k8s_minor=$(cd "$here" && GOFLAGS=-mod=mod go mod download -json "$h@$HELM_VERSION" |
    sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' | xargs grep -m1 'k8s.io/client-go ' |
    sed -E 's/.*v0\.([0-9]+)\..*/\1/')
  build_installable helm "$HELM_VERSION" "$h/cmd/helm" "-X $h/internal/version.version=$HELM_VERSION \
    -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=$k8s_minor \
    -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=$k8s_minor"
}

# The prometheus-operator CRDs (PodMonitor, ServiceMonitor, PrometheusRule), copied out of the
# official Go module's zip: the e2e tests check that the API server accepts the chart's objects.
build_prometheus_crds() {
  local dest=$cache/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION
  local module=github.com/prometheus-operator/prometheus-operator
  [ -f "$dest/monitoring.coreos.com_prometheusrules.yaml" ] && return
  log "prometheus-operator CRDs $PROMETHEUS_OPERATOR_VERSION"
  _copy_crds() {
    local dir
    dir=$(go mod download -json "$module@$PROMETHEUS_OPERATOR_VERSION" |
      sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    cp "$dir"/example/prometheus-operator-crd/monitoring.coreos.com_{podmonitors,servicemonitors,prometheusrules}.yaml "$1/"
  }
  install_dir "$dest" _copy_crds
}

# LeaderWorkerSet's manager (the comparison in bench/bench_vs_lws.py) from the wrapper module in
# build/lws, and from the same module's source its CRDs and webhook configurations with the
# patches its kustomization applies.
build_lws() {
  local dest=$bin/lws-$LWS_VERSION module=sigs.k8s.io/lws
  [ -x "$dest/manager" ] && return
  log "lws $LWS_VERSION"
  _build_lws() {
    local dir
    (cd "$here/build/lws" && go build -trimpath \
      -ldflags "-s -w -X $module/pkg/version.GitVersion=$LWS_VERSION" -o "$1/manager" "$module/cmd")
    dir=$(cd "$here/build/lws" && go list -m -f '{{.Dir}}' "$module")
    cp "$dir"/config/crd/bases/*.yaml "$1/"
    cp "$dir"/config/webhook/{manifests,mutating-patch,validating-patch}.yaml "$1/"
    chmod u+w "$1"/*.yaml  # the module cache is read-only
  }
  install_dir "$dest" _build_lws
}

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(etcd kwok kubernetes helm prometheus-crds)
for c in "${components[@]}"; do
  case $c in
    kubernetes|etcd|kwok|helm|node|coredns|lws) "build_$c" ;;
    prometheus-crds) build_prometheus_crds ;;
    *) echo "build.sh: unknown component '$c' (kubernetes, etcd, kwok, helm, prometheus-crds, node, coredns, lws)" >&2; exit 2 ;;
  esac
done
