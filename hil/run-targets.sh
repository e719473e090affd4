#!/usr/bin/env bash
# The harness on several targets at once, each in a private network namespace of its own (its own
# livekit-server, agent and nftables rules: a server restart or a lossy link on one never touches another).
#   hil/run-targets.sh PROFILE DIR TARGET... [-- HIL-RUN-ARGS...]
#   e.g. hil/run-targets.sh ci build/hil-ci sim-esp32 sim-pi -- --scenario join --repeat 2
# Lines are prefixed with their target; each report goes to DIR/TARGET; exits 1 if any target failed.
set -uo pipefail
if (( $# < 3 )); then echo "usage: $0 PROFILE DIR TARGET..." >&2; exit 2; fi
profile=$1 dir=$2; shift 2
targets=()
while (( $# )) && [[ $1 != -- ]]; do targets+=("$1"); shift; done
(( $# )) && shift
extra=("$@")
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PY:-python3}
mkdir -p "$dir"
pids=() names=()
for target in "${targets[@]}"; do
  out="$dir/${target//[^A-Za-z0-9._-]/_}"
  ( "$here/host_tools/isolated.sh" "$py" -m lkdevice.cli hil run --target "$target" --profile "$profile" \
      --report "$out" "${extra[@]}" 2>&1 | sed -u "s|^|[$target] |" ) &
  pids+=($!) names+=("$target")
done
rc=0 failed=()
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"; code=$?
  if (( code != 0 )); then rc=1; failed+=("${names[$i]} (exit $code)"); fi
done
if (( rc )); then echo "hil: failed: ${failed[*]}" >&2; else echo "hil: every target passed (${targets[*]})"; fi
exit $rc
