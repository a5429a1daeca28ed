#!/usr/bin/env bash
# The main job: install what is missing, then run the archive on the embedded default
# (SQLite + files under ./data) with the demo studies loaded, printing where to connect.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/cloudfilm serve --demo "$@"
