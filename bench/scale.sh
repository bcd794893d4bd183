#!/usr/bin/env bash
# The engine with a large store, on SQLite and on PostgreSQL in one run: N keys and N secrets
# written through the engine's API, then a fresh process opens each store and reports the time to
# open, resident memory, ListKeys/ListSecrets pages at both ends, warm Encrypt, a cache-missing
# DescribeKey, and memory after touching 30,000 keys (three times what the cache holds).
#   bench/scale.sh              100,000 keys + 100,000 secrets (about 8 minutes to populate)
#   N=10000 bench/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p kms-bench
n=${N:-100000}
dir=$(mktemp -d)
chmod 755 "$dir"
. bench/pg.sh
cleanup() { pg_cleanup; rm -rf "$dir"; }
trap cleanup EXIT
pg_start 18270
echo "machine: $(nproc) cores; PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), fsync on; $n keys + $n secrets"
t0=$(date +%s)
target/release/kms-scale populate --dir "$dir/sqlite" --keys "$n" --secrets "$n" 2>/dev/null
t1=$(date +%s)
target/release/kms-scale populate --dir "$dir/postgres" --store "$url" --keys "$n" --secrets "$n" 2>/dev/null
t2=$(date +%s)
echo "populated through the engine: SQLite $((t1 - t0)) s, PostgreSQL $((t2 - t1)) s"
echo
target/release/kms-scale probe --dir "$dir/sqlite"
echo
target/release/kms-scale probe --dir "$dir/postgres" --store "$url"
