#!/usr/bin/env bash
# Installs what `make bench` drives: nginx, HAProxy, h2load (nghttp2-client) and
# Caddy from Debian's packages. Quick and silent when they are already there.
# The packages' own services are never started: the benchmark runs its own
# processes on 127.0.0.1 only.
set -euo pipefail

pkgs=(nginx haproxy nghttp2-client caddy)
missing=()
for p in "${pkgs[@]}"; do
	if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
		missing+=("$p")
	fi
done
((${#missing[@]})) || exit 0

sudo=()
if ((EUID != 0)); then
	command -v sudo >/dev/null || { echo "bench-tools: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
	sudo=(sudo)
fi
echo "bench-tools: installing ${missing[*]} from Debian"
# policy-rc.d exit 101 tells the packages' maintainer scripts not to start their
# services (nginx and Caddy would listen on *:80). Only ours, only for this install.
policy=/usr/sbin/policy-rc.d
ours=0
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
	"${sudo[@]}" chmod 755 "$policy"
	ours=1
fi
cleanup() { if ((ours)); then "${sudo[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
