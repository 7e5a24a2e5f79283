#!/usr/bin/env bash
# Benchmark for issue 28 ("progress with any worker budget"): the 67-database
# test of pg_test/integration/tests/progress.rs (60 cloned databases and 7
# made one by one, each with the default jobs and a 10-second job), watched
# for 60 s on the release build restarted with max_worker_processes = 4, 8
# and 32 in turn. Prints, per budget: fires expected and run, runs per
# database (least to most) and start lateness p50/p95/max. (0.7.0, the
# baseline: at 4 nothing ran anywhere for minutes; at 8, once, 0 of 360
# fires in 60 s.)
# Usage: bash bench/progress.sh ["4 8 32"]
set -euo pipefail
cd "$(dirname "$0")/.."
AUTOMATION_PROGRESS_WORKERS=${1:-"4 8 32"} exec bash scripts/test.sh integration progress
