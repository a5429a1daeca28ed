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
exec .venv/bin/python -m pytest "$@"
