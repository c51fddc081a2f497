#!/usr/bin/env bash
# Soak the distributed stack under faults: N runs while workers and the broker are killed at random.
# Everything runs privately on free loopback ports (never the shared PostgreSQL or Redis); see
# scripts/soak.py for what is started and what the figures mean. Usage:
#   scripts/soak.sh [--runs 40] [--workers 2] [--seed 0] [--verify] [--keep]
# Prints "submitted / succeeded / lost / duplicated: N / N / 0 / 0" and exits 0 only for those.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
for binary in initdb pg_ctl redis-server; do
  command -v "$binary" >/dev/null || { echo "soak: $binary is not installed" >&2; exit 2; }
done
exec timeout --kill-after=30 "${SOAK_TIMEOUT_S:-900}" "$PYTHON" scripts/soak.py "$@"
