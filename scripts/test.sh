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

cargo test --workspace --locked "$@"
