#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages: redis-server (the tests start their
# own on a free port), Node.js with npm, and the npm packages of tests/js (the `centrifuge`
# client and `ws`, from tests/js/package-lock.json). Missing system packages come from apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-deps: installing ${missing[*]} with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cd tests/js
if [ ! -d node_modules/centrifuge ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
