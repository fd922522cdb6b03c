#!/usr/bin/env bash
# Long property-test ("fuzz") run for the parsers that see untrusted bytes: the
# stored-entry decoder, the catalog-page parser and the query parser.
# usage: scripts/fuzz.sh [cases-per-property]   (default 100000; 6 properties)
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-100000}"
start=$(date +%s)
PROPTEST_CASES="$cases" cargo test --release -p cache-core --lib tests::properties -- --test-threads 2
echo "fuzz: 6 properties x ${cases} cases = $((6 * cases)) executions in $(( $(date +%s) - start )) s"
