#!/usr/bin/env bash
# Idempotent set-up shared by the two README commands: Debian packages the project talks to
# (dcmtk as a DICOM peer, Chromium for browser tests, Orthanc as a DICOM peer in tests and for
# benchmarks), a virtual environment with the pinned Python packages, and the viewer build when
# its sources changed.
set -euo pipefail
cd "$(dirname "$0")/.."

want_apt=(dcmtk openjph-tools)
if [ "${CLOUDFILM_SETUP_TEST:-0}" = 1 ]; then
  want_apt+=(chromium chromium-driver orthanc orthanc-dicomweb)
fi
missing=()
for p in "${want_apt[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.cloudfilm-installed
extra=""; [ "${CLOUDFILM_SETUP_TEST:-0}" = 1 ] && extra="[test]"
want="$(sha256sum pyproject.toml | cut -c1-16)$extra"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing Python packages$extra"
  .venv/bin/pip install -q --disable-pip-version-check -e ".$extra"
  echo "$want" > "$stamp"
fi

# Bytecode for our own modules: this machine kind sets PYTHONDONTWRITEBYTECODE=1, so without
# it every process (serve, each worker, each CLI call) compiles ~300 modules again (~0.5 s).
.venv/bin/python -m compileall -q src > /dev/null

if [ -f web/package.json ]; then
  bash scripts/build-web.sh
fi
