#!/usr/bin/env bash
# Runs the mocha suite on every other Node major of the matrix (the default `node` ran the whole
# `npm test`): the addon is N-API, so the one build serves them all. Each major comes from the
# npm registry through scripts/install-nodes.sh (cached under .nodes/).
#
#   scripts/test-matrix.sh [major ...]   (default: 22 24 26)
set -euo pipefail
cd "$(dirname "$0")/.."
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(22 24 26)
status=0
summary=()
for major in "${majors[@]}"; do
  node_bin=$(scripts/install-nodes.sh "$major")
  echo "+ mocha on $("$node_bin" --version) ($node_bin)"
  start=$(date +%s)
  # mocha's own bin, run by that node: the tests fork their masters with process.execPath
  if PATH="$(dirname "$node_bin"):$PATH" "$node_bin" node_modules/mocha/bin/mocha.js; then
    summary+=("node $major: passed in $(( $(date +%s) - start )) s")
  else
    summary+=("node $major: FAILED in $(( $(date +%s) - start )) s")
    status=1
  fi
done
printf '+ %s\n' "${summary[@]}"
exit $status
