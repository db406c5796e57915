#!/usr/bin/env bash
# Builds (or reuses) the sandbox's binaries: the Kubernetes control plane and
# kubectl (one multi-call binary from hack/kube), etcd (hack/etcd), kwok and
# helm (pinned `go install`), and makes sure Debian's prometheus is installed.
#
# Binaries land in "${XDG_CACHE_HOME:-$HOME/.cache}/infleet/bin/<key>/", where
# <key> is derived from hack/versions.env and the Go modules in hack/, so a
# rebuild happens only when a version changes. Idempotent; safe to re-run after
# an interruption (finished components of a partial build are kept).
#
# Usage: bash hack/build.sh            build or reuse, print the directory last
#        bash hack/build.sh --print-dir print the directory only, build nothing
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HACK/versions.env"

# Every module here declares go 1.26.0, which the machine's Go provides. If a
# pin ever needs a newer Go, set GOTOOLCHAIN here (the approved one comes
# through the module proxy like any module).
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="-trimpath -buildvcs=false"
export CGO_ENABLED=0
LDFLAGS="-s -w"

# The files that decide what gets built; infleet.sandbox.binaries hashes the
# same list in the same order to find the directory.
KEY_FILES=(versions.env kube/go.mod kube/go.sum kube/main.go etcd/go.mod etcd/go.sum etcd/main.go)
key="$(cd "$HACK" && cat "${KEY_FILES[@]}" | sha256sum | cut -c1-12)"
# Same rule as Python's Path.home(): $HOME, else the passwd entry.
HOME_DIR="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME_DIR/.cache}/infleet/bin"
OUT="$CACHE_ROOT/${KUBERNETES_VERSION}-${key}"

if [[ "${1:-}" == "--print-dir" ]]; then
	echo "$OUT"
	exit 0
fi

START=$(date +%s)
log() { printf '[build %4ds] %s\n' "$(($(date +%s) - START))" "$*"; }

# Debian packages: prometheus (the sandbox's metrics server).
need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
if ((${#need_apt[@]})); then
	SUDO=()
	[[ "$(id -u)" == 0 ]] || SUDO=(sudo)
	log "installing Debian packages: ${need_apt[*]}"
	"${SUDO[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
log "prometheus: $(prometheus --version 2>&1 | head -1)"

if [[ -f "$OUT/.complete" ]]; then
	log "reusing binaries in $OUT"
	echo "$OUT"
	exit 0
fi

command -v go >/dev/null || {
	echo "build.sh: 'go' is not on PATH; install Go 1.26 or newer" >&2
	exit 1
}
log "building into $OUT with $(go version) (kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION, helm $HELM_VERSION)"
PARTIAL="$OUT.partial"
mkdir -p "$PARTIAL"

# Runs a go build/install (given with -v) and turns its package list into
# progress lines (every 25 packages) plus a heartbeat each minute, since CI
# only shows output and a cold Kubernetes build takes many minutes.
run_go() {
	local label="$1"
	shift
	local t0=$SECONDS last=$SECONDS rc=0 n=0 line status
	while true; do
		status=0
		IFS= read -r -t 60 line || status=$?
		if ((status > 128)); then
			# Timed out: nothing printed for a minute (a long compile or the link).
			printf '[build] still building %s ... %ds\n' "$label" $((SECONDS - t0))
			continue
		fi
		((status == 0)) || break
		if ((SECONDS - last >= 60)); then
			printf '[build] still building %s ... %ds\n' "$label" $((SECONDS - t0))
			last=$SECONDS
		fi
		if [[ "$line" == "__go_failed__ "* ]]; then
			rc="${line#__go_failed__ }"
		elif [[ "$line" =~ ^[A-Za-z0-9_./~+-]+$ ]]; then
			n=$((n + 1))
			((n % 25)) || printf '[build] %s: %d packages (%ds)\n' "$label" "$n" $((SECONDS - t0))
		elif [[ "$line" != "go: downloading "* ]]; then
			printf '%s\n' "$line"
		fi
	done < <("$@" 2>&1 || echo "__go_failed__ $?")
	printf '[build] %s: %d packages compiled\n' "$label" "$n"
	return "$rc"
}

build_component() {
	local name="$1"
	shift
	if [[ -x "$PARTIAL/$name" ]]; then
		log "$name: already built"
		return
	fi
	log "$name: building"
	run_go "$name" "$@"
	log "$name: done ($(du -h "$PARTIAL/$name" | cut -f1))"
}

build_component infleet-kube \
	go -C "$HACK/kube" build -v -p 2 -ldflags="$LDFLAGS" -o "$PARTIAL/infleet-kube" .
build_component etcd \
	go -C "$HACK/etcd" build -v -p 2 -ldflags="$LDFLAGS" -o "$PARTIAL/etcd" .
build_component kwok \
	env GOBIN="$PARTIAL" go install -v -p 2 -ldflags="$LDFLAGS" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
build_component helm \
	env GOBIN="$PARTIAL" go install -v -p 2 -ldflags="$LDFLAGS" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
	ln -sf infleet-kube "$PARTIAL/$cmd"
done
ln -sf "$(command -v prometheus)" "$PARTIAL/prometheus"
"$PARTIAL/kubectl" version --client=true >/dev/null
"$PARTIAL/etcd" --version >/dev/null
touch "$PARTIAL/.complete"
rm -rf "$OUT"
mv "$PARTIAL" "$OUT"
log "built all binaries in $OUT"
echo "$OUT"
