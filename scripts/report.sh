#!/usr/bin/env bash
# The performance report: every workload (W1-W6), idemstore
# beside its peers in one run, printed as markdown.
#
#   scripts/report.sh [SECONDS_PER_CELL (2)] [KEYS for W4/W5 (1000000)]
#
# Redis rows need redis-server on PATH (scripts/test.sh installs it as root);
# without it they are skipped with a message. Runs in target/report-tmp on the
# same filesystem as the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p idemstore-benches --bins
mkdir -p target/report-tmp
cd target/report-tmp
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(df -h . | awk 'NR==2 {print $1}')" >&2
exec ../release/report "$@"
