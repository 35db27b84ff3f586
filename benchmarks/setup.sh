#!/usr/bin/env bash
# Installs what the benchmark suite needs besides the project: the Python extras
# (matplotlib, python-socketio, py-spy) into the project's virtualenv, and Bun, from the npm
# package `bun`, into benchmarks/.local/npm (git-ignored). Idempotent; run by `make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."

BUN_VERSION="${BUN_VERSION:-1.4.4}"
PYTHON="${PYTHON:-.venv/bin/python}"
PREFIX="benchmarks/.local/npm"

if ! "$PYTHON" -c "import matplotlib, socketio" 2>/dev/null || [ ! -x "$(dirname "$PYTHON")/py-spy" ]; then
    "$PYTHON" -m pip install --quiet -e '.[bench]'
fi

if command -v redis-server >/dev/null; then :; else
    echo "setup.sh: redis-server is not installed; the Redis-engine rows will be skipped" >&2
fi

bun="$PREFIX/node_modules/.bin/bun"
if [ -x "$bun" ] && [ "$("$bun" --version 2>/dev/null)" = "$BUN_VERSION" ]; then
    exit 0
fi
if ! command -v npm >/dev/null; then
    echo "setup.sh: npm is not installed; Bun's rows will be skipped" >&2
    exit 0
fi
mkdir -p "$PREFIX"
if ! npm install --silent --no-audit --no-fund --prefix "$PREFIX" "bun@$BUN_VERSION"; then
    echo "setup.sh: npm install bun@$BUN_VERSION failed; Bun's rows will be skipped" >&2
    exit 0
fi
"$bun" --version >/dev/null 2>&1 || echo "setup.sh: bun does not run here; its rows will be skipped" >&2
