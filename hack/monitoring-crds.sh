#!/usr/bin/env bash
# Generates the prometheus-operator CRDs for ServiceMonitor and PodMonitor, which the Helm
# chart tests install into the sandbox to server-side validate the chart's monitors.
#
# The CRDs come from the API types of the pinned prometheus-operator module
# (pkg/apis/monitoring) through controller-gen at a pinned version, the way the
# prometheus-operator project generates them; nothing is written by hand. (Only that
# sub-module is served by the Go module proxy, not the repository's root module with its
# ready-made example YAMLs.)
#
# Output: "${XDG_CACHE_HOME:-$HOME/.cache}/infleet/monitoring-crds/<version>/*.yaml".
# Idempotent; reuses a finished output.
#
# Usage: bash hack/monitoring-crds.sh              generate or reuse, print the directory
#        bash hack/monitoring-crds.sh --print-dir  print the directory only
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=monitoring-crds.env
source "$HACK/monitoring-crds.env"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0

HOME_DIR="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
ROOT="${XDG_CACHE_HOME:-$HOME_DIR/.cache}/infleet/monitoring-crds"
OUT="$ROOT/${PROMETHEUS_OPERATOR_VERSION}-controller-tools-${CONTROLLER_TOOLS_VERSION}"

if [[ "${1:-}" == "--print-dir" ]]; then
	echo "$OUT"
	exit 0
fi
if [[ -f "$OUT/.complete" ]]; then
	echo "$OUT"
	exit 0
fi
command -v go >/dev/null || {
	echo "monitoring-crds.sh: 'go' is not on PATH; install Go 1.26 or newer" >&2
	exit 1
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "[monitoring-crds] controller-gen $CONTROLLER_TOOLS_VERSION, prometheus-operator $PROMETHEUS_OPERATOR_VERSION" >&2
GOBIN="$WORK/bin" GOFLAGS="-trimpath -buildvcs=false" \
	go install -ldflags="-s -w" "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION"

# A throw-away module that depends on the API types, so controller-gen can load them.
API=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring
mkdir -p "$WORK/mod"
cat >"$WORK/mod/go.mod" <<MOD
module infleet.local/monitoringcrds

go 1.26.0

require $API $PROMETHEUS_OPERATOR_VERSION
MOD
printf 'package monitoringcrds\n\nimport _ "%s/v1"\n' "$API" >"$WORK/mod/deps.go"
(cd "$WORK/mod" && GOFLAGS=-mod=mod go mod tidy)
(cd "$WORK/mod" && GOFLAGS=-mod=mod "$WORK/bin/controller-gen" crd:crdVersions=v1 \
	"paths=$API/v1" "output:crd:dir=$WORK/out")

mkdir -p "$OUT.partial"
for kind in servicemonitors podmonitors; do
	cp "$WORK/out/monitoring.coreos.com_$kind.yaml" "$OUT.partial/"
done
touch "$OUT.partial/.complete"
rm -rf "$OUT"
mv "$OUT.partial" "$OUT"
echo "$OUT"
