#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages: redis-server, nats-server, the
# PostgreSQL server binaries (the tests start private servers of their own on free ports), Chromium (for
# the browser tests), tmux (the terminal chat is tested in real terminals), Node.js with npm,
# and the npm packages of tests/js (the `centrifuge` client and `ws`, from
# tests/js/package-lock.json). Missing system packages come from apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
install_postgresql=no
# The Sentinel tests run `redis-server <conf> --sentinel`: Debian's redis-server has it built
# in (the redis-sentinel package only adds a service), so nothing more is needed for them.
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Debian installs nats-server in /usr/sbin, which not every user has on PATH.
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# tests/store looks for initdb on PATH, then in Debian's versioned directories; so does this.
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  missing+=(postgresql)
  install_postgresql=yes
fi
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$install_postgresql" = yes ]; then
    # The package would create and start a "main" cluster on port 5432; the tests never use
    # it (they initdb their own), so tell its installer not to create one.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/hubbub-tests.conf
  fi
  echo "test-deps: installing ${missing[*]} with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cd tests/js
if [ ! -d node_modules/centrifuge ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
