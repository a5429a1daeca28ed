#!/usr/bin/env bash
# The whole test suite: lint, format check, then every test against real peers (dcmtk,
# PostgreSQL on 127.0.0.1:5432, an S3 API server, Chromium). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
CLOUDFILM_SETUP_TEST=1 bash scripts/setup.sh
echo "==> ruff check"
.venv/bin/ruff check src tests bench
echo "==> ruff format --check"
.venv/bin/ruff format --check src tests bench
echo "==> pytest"
# One test process per core (CLOUDFILM_TEST_WORKERS to change it, 0 for none). worksteal:
# each process starts with a contiguous half of the tests (a module's server is started once)
# and an idle one takes tests from the other's end, so no core waits out a long last file.
# Every test has its own ports, folders and index, so processes never share state.
exec .venv/bin/python -m pytest -n "${CLOUDFILM_TEST_WORKERS:-auto}" --dist worksteal "$@"
