#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kube-scheduler from the Go module proxy into a
# cache outside the repository:
#
#   ${TETHER_CACHE:-$HOME/.cache/tether}/controlplane/<k8s version>-<key>/bin/
#
# <key> hashes go.mod, go.sum, the mains, this script and the Go version, so any
# change to them builds into a new directory. When the binaries are there this is
# a no-op that takes well under a second. A cold build takes 5 to 12 minutes on
# two cores.
#
# Usage:
#   build.sh             build if needed, then print the bin directory
#   build.sh --print-dir print the bin directory without building
set -euo pipefail
cd "$(dirname "$0")"

GO="${GO:-go}"
BINARIES=(etcd kube-apiserver kube-scheduler)

kube_version="$(sed -n 's/^[[:space:]]*k8s\.io\/kubernetes[[:space:]]\+\(v[^[:space:]]*\).*/\1/p' go.mod | head -n1)"
[[ -n "$kube_version" ]] || { echo "build.sh: k8s.io/kubernetes not required in go.mod" >&2; exit 1; }
key="$({ cat go.mod go.sum build.sh; cat cmd/*/main.go; "$GO" env GOVERSION GOOS GOARCH; } | sha256sum | cut -c1-12)"
cache="${TETHER_CACHE:-$HOME/.cache/tether}/controlplane"
dir="$cache/${kube_version}-${key}"
bin="$dir/bin"

have_all() {
	local b
	for b in "${BINARIES[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

if [[ "${1:-}" == "--print-dir" ]]; then
	echo "$bin"
	exit 0
fi
if have_all; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache"
# Test packages run in parallel and may all ask for a build: one builds, the rest wait.
exec 9>"$cache/.build.lock"
flock 9
if have_all; then
	echo "$bin"
	exit 0
fi

minor="${kube_version#v1.}"
minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
echo "build.sh: building ${BINARIES[*]} for k8s.io/kubernetes $kube_version (a cold build takes 5 to 12 minutes on two cores)" >&2
CGO_ENABLED=0 "$GO" build -trimpath -ldflags "$ldflags" -o "$tmp/" ./cmd/... >&2
for b in "${BINARIES[@]}"; do [[ -x "$tmp/$b" ]] || { echo "build.sh: $b was not built" >&2; exit 1; }; done
chmod 755 "$tmp"
mkdir -p "$dir"
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "build.sh: built in $((SECONDS - start))s" >&2
echo "$bin"
