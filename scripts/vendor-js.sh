#!/usr/bin/env bash
# Refreshes the chat page's copy of the npm `centrifuge` SDK's browser build (make vendor-js).
#
# Usage: scripts/vendor-js.sh VERSION
#
# Fetches the package at exactly VERSION with `npm pack` (which checks the tarball against the
# registry's integrity hash), and writes into src/hubbub/web/static/vendor/:
#   centrifuge.js    the package's dist/centrifuge.js, byte for byte: the self-contained
#                    browser build that sets window.Centrifuge (loaded by index.html as a
#                    same-origin script, as the page's Content-Security-Policy requires)
#   LICENSE          the package's license, shipped beside it
#   centrifuge.json  where it came from: name, version, the registry's integrity hash and
#                    the file's sha256 (tests/web/test_vendor.py checks them)
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:?usage: scripts/vendor-js.sh VERSION}"
dest=src/hubbub/web/static/vendor
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
command -v npm >/dev/null 2>&1 || { echo "vendor-js: npm is required (make test-deps)" >&2; exit 1; }
(cd "$work" && npm pack --silent --json "centrifuge@$version" >pack.json)
tar -xzf "$work/centrifuge-$version.tgz" -C "$work"
packed="$(node -p "require('$work/package/package.json').version")"
[ "$packed" = "$version" ] || { echo "vendor-js: npm gave $packed, not $version" >&2; exit 1; }
mkdir -p "$dest"
cp "$work/package/dist/centrifuge.js" "$dest/centrifuge.js"
cp "$work/package/LICENSE" "$dest/LICENSE"
node -e '
const fs = require("fs");
const crypto = require("crypto");
const [packFile, file, out] = process.argv.slice(1);
const packed = JSON.parse(fs.readFileSync(packFile, "utf8"))[0];
const sha256 = crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
const record = {
  name: packed.name,
  version: packed.version,
  file: "dist/centrifuge.js",
  integrity: packed.integrity,
  sha256,
};
fs.writeFileSync(out, JSON.stringify(record, null, 2) + "\n");
' "$work/pack.json" "$dest/centrifuge.js" "$dest/centrifuge.json"
echo "vendor-js: centrifuge $version -> $dest/centrifuge.js"
