#!/usr/bin/env bash
# The Debian packages the tests and the demo need besides Python's: installed when
# missing and we are root with apt-get, otherwise named so the user can install them.
set -euo pipefail

need=()
command -v ip >/dev/null || need+=(iproute2)          # the test network namespace
command -v unshare >/dev/null || need+=(util-linux)
command -v nft >/dev/null || need+=(nftables)         # lossy-network tests drop packets in the namespace
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)     # tests/live/test_deploy.py: the Pi's sshd, in the namespace,
command -v sudo >/dev/null || need+=(sudo)            # and its user's passwordless sudo (as Pi OS's first user)
command -v espeak-ng >/dev/null || need+=(espeak-ng)   # the offline voice agent's TTS, and the demo's spoken question
# opuslib (playout's Opus decoder) loads the system libopus; without it playout falls back to PyAV
{ ldconfig -p 2>/dev/null || true; } | grep 'libopus\.so\.0' >/dev/null || need+=(libopus0)
((${#need[@]})) || exit 0

if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "installing ${need[*]} (apt-get)"
  { apt-get install -y -qq "${need[@]}" || { apt-get update -qq && apt-get install -y -qq "${need[@]}"; }; } >/dev/null
else
  echo "missing system packages: ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
