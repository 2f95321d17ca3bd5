#!/usr/bin/env bash
# The project's test command: what a newcomer runs, and what CI runs.
#
#   scripts/test.sh                 # every test of every crate
#   scripts/test.sh -p wal-fs       # extra arguments go to `cargo test`
#
# It first runs scripts/setup.sh (protoc for etcd-client; an etcd image for the
# etcd tests, pulled or built offline), then `cargo test --workspace
# --all-features`. The etcd tests start real etcd containers with Docker; set
# WAL_ETCD_ENDPOINTS to use an existing cluster for the single-node tests.
# Long soak runs are opt-in: WAL_CRASH_ITERATIONS=2000 for the SIGKILL test,
# WAL_POWERLOSS_SOAK=10 for the power-loss explorer.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

setup_out=$(scripts/setup.sh)
eval "$setup_out"
echo "test: WAL_ETCD_IMAGE=${WAL_ETCD_IMAGE:-<unset>} WAL_ETCD_ENDPOINTS=${WAL_ETCD_ENDPOINTS:-<unset>}" >&2

if [ $# -eq 0 ]; then
    set -- --workspace
fi
exec cargo test --all-features "$@"
