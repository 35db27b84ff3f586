#!/usr/bin/env bash
# Installs what the Node-side tests need: Node.js with npm (from Debian when missing) and the
# npm packages of tests/js (the `centrifuge` client and `ws`), from tests/js/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "js-deps: installing nodejs and npm with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
cd tests/js
if [ ! -d node_modules/centrifuge ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
