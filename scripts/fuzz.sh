#!/bin/sh
# A long run of the parsers' property tests (src/proptests.rs): the IPC framing and JSON
# validator, the sticky client key (HTTP head, PROXY v1/v2), the probe server's parser.
# `cargo test` runs 4,096 cases per property; this runs PROPTEST_CASES (default 100000).
#   scripts/fuzz.sh            # 100,000 cases per property
#   PROPTEST_CASES=1000000 scripts/fuzz.sh
set -e
cd "$(dirname "$0")/.."
PROPTEST_CASES="${PROPTEST_CASES:-100000}" exec nice -n 10 cargo test --release proptests:: -- --test-threads 2
