#!/usr/bin/env bash
# Build the viewer (web/) into src/cloudfilm/static/viewer, only when needed:
#   - `npm ci` when web/package-lock.json changed since the last install (stamp in node_modules);
#   - `npm run build` when a source under web/ is newer than the built index.html.
# Without node/npm it succeeds only if a built viewer is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

WEB=web
OUT=src/cloudfilm/static/viewer
STAMP=$WEB/node_modules/.cloudfilm-lock-sha256

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ -f "$OUT/index.html" ]; then
    echo "==> node/npm not found; using the viewer already built in $OUT"
    exit 0
  fi
  echo "error: the viewer is not built and node/npm are missing." >&2
  echo "       Install Node.js 20+ with npm (Debian: apt-get install nodejs npm), then run" >&2
  echo "       bash scripts/build-web.sh" >&2
  exit 1
fi

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "error: Node.js $(node -v) is too old for the viewer build; 20 or newer is needed." >&2
  exit 1
fi

lock_sum=$(sha256sum "$WEB/package-lock.json" | cut -c1-64)
if [ ! -d "$WEB/node_modules" ] || [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$lock_sum" ]; then
  echo "==> npm ci (web/)"
  (cd "$WEB" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" > "$STAMP"
fi

need_build=0
if [ ! -f "$OUT/index.html" ]; then
  need_build=1
elif [ -n "$(find "$WEB/src" "$WEB/index.html" "$WEB/vite.config.ts" "$WEB/tsconfig.json" \
            "$WEB/package-lock.json" "$STAMP" -newer "$OUT/index.html" -print -quit 2>/dev/null)" ]; then
  need_build=1
fi
if [ "$need_build" = 1 ]; then
  echo "==> building the viewer (web/ -> $OUT)"
  (cd "$WEB" && npm run build --silent -- --logLevel error)
  touch "$OUT/index.html"
else
  echo "==> viewer is up to date"
fi
