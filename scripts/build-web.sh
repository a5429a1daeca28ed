#!/usr/bin/env bash
# Build the web front ends (web/) into the Python package, each only when needed:
#   viewer  (web/src, vite.config.ts)                 -> src/cloudfilm/static/viewer
#   console (web/console, vite.console.config.ts)     -> src/cloudfilm/static/console
#   - `npm ci` when web/package-lock.json changed since the last install (stamp in node_modules);
#   - a front end is rebuilt when one of its sources is newer than its built output.
# `bash scripts/build-web.sh` builds both; `... viewer` or `... console` only that one.
# Without node/npm it succeeds only if the wanted builds are already there.
set -euo pipefail
cd "$(dirname "$0")/.."

WEB=web
OUT=src/cloudfilm/static/viewer
BUILT=$OUT/index.html
CONSOLE_OUT=src/cloudfilm/static/console
CONSOLE_BUILT=$CONSOLE_OUT/console.js
STAMP=$WEB/node_modules/.cloudfilm-lock-sha256

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(viewer console)
want_viewer=0
want_console=0
for t in "${targets[@]}"; do
  case "$t" in
    viewer) want_viewer=1 ;;
    console) want_console=1 ;;
    *) echo "usage: $0 [viewer] [console]" >&2; exit 2 ;;
  esac
done

# Test sessions build on demand and may run side by side: one build at a time.
exec 9<"$0"
flock 9

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if { [ "$want_viewer" = 0 ] || [ -f "$BUILT" ]; } && { [ "$want_console" = 0 ] || [ -f "$CONSOLE_BUILT" ]; }; then
    echo "==> node/npm not found; using the front ends already built in src/cloudfilm/static"
    exit 0
  fi
  echo "error: the web front ends are not built and node/npm are missing." >&2
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

# newer_than OUTPUT SOURCE...: true when OUTPUT is missing or a SOURCE is newer.
newer_than() {
  local out=$1
  shift
  [ ! -f "$out" ] && return 0
  [ -n "$(find "$@" -newer "$out" -print -quit 2>/dev/null)" ]
}

# The type check covers both front ends (tsconfig.json includes src and console).
typechecked=0
typecheck() {
  if [ "$typechecked" = 0 ]; then
    (cd "$WEB" && npm run typecheck --silent)
    typechecked=1
  fi
}

if [ "$want_viewer" = 1 ]; then
  if newer_than "$BUILT" "$WEB/src" "$WEB/index.html" "$WEB/vite.config.ts" "$WEB/tsconfig.json" \
      "$WEB/package-lock.json" "$STAMP"; then
    echo "==> building the viewer (web/ -> $OUT)"
    typecheck
    (cd "$WEB" && npm run build:viewer --silent -- --logLevel error)
    touch "$BUILT"
  else
    echo "==> viewer is up to date"
  fi
fi

if [ "$want_console" = 1 ]; then
  if newer_than "$CONSOLE_BUILT" "$WEB/console" "$WEB/vite.console.config.ts" "$WEB/vite.config.ts" \
      "$WEB/tsconfig.json" "$WEB/package-lock.json" "$STAMP"; then
    echo "==> building the console front end (web/console -> $CONSOLE_OUT)"
    typecheck
    (cd "$WEB" && npm run build:console --silent -- --logLevel error)
    touch "$CONSOLE_BUILT"
  else
    echo "==> console front end is up to date"
  fi
fi
