#!/usr/bin/env bash
# Run a command in a private network namespace: loopback plus one veth pair
# (10.77.0.1 <-> 10.77.0.2) that exists only inside it. WebRTC stacks that ignore
# loopback (libwebrtc, aioice) find real host addresses there, and no packet can
# leave the machine. Needs root (or unprivileged user namespaces).
set -euo pipefail
if [[ "${LKDEVICE_ISOLATED:-}" == 1 ]]; then exec "$@"; fi
if [[ $(id -u) == 0 ]]; then ns=(unshare -n); else ns=(unshare -r -n); fi
exec "${ns[@]}" bash -c '
set -e
ip link set lo up
ip link add lkd0 type veth peer name lkd1
ip addr add 10.77.0.1/24 dev lkd0
ip addr add 10.77.0.2/24 dev lkd1
ip link set lkd0 up
ip link set lkd1 up
export LKDEVICE_ISOLATED=1 LKDEVICE_NODE_IP=10.77.0.1
exec "$@"
' isolated "$@"
