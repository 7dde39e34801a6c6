#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine. This is the README's
# test command and what .ci/run calls after fmt and clippy.
#
# Everything the tests need is set up here and torn down at the end; nothing
# is expected to be installed by hand besides the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

# The crash test kills child processes 20 times by default; set
# IDEMSTORE_CRASH_KILLS for a longer run.
export IDEMSTORE_CRASH_KILLS="${IDEMSTORE_CRASH_KILLS:-20}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?

# One closing line for the whole run (cargo prints one per test binary).
echo
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($i ~ /^passed/) p += $(i - 1)
         if ($i ~ /^failed/) f += $(i - 1)
       }
     }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
