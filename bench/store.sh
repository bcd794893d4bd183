#!/usr/bin/env bash
# One sidecar on the embedded SQLite store next to three sidecars sharing one PostgreSQL (Debian's
# server, a throw-away cluster in a temp dir, fsync and synchronous_commit on), in one run:
# Encrypt/Decrypt/GenerateDataKey per node (crypto never touches the database), CreateKey and
# PutSecretValue aggregate over the three nodes, and DisableKey propagation node 0 -> node 1.
#   bench/store.sh                    3 s per cell
#   SECONDS_PER_CELL=1 bench/store.sh
#   CELLS=writes bench/store.sh       only these cells (crypto, writes, propagation; or one write
#                                     row: createkey, psv, psv-one)
#   KMS_SIDECAR=/other/kms-sidecar bench/store.sh   another build of the sidecar (an A/B run)
#   PG_STATEMENTS=1 bench/store.sh    then the statements PostgreSQL spent the most time on
#                                     (pg_stat_statements) and its WAL figures (pg_stat_wal)
#   PG_DELAY_US=250 bench/store.sh    the nodes reach PostgreSQL through a relay adding 250 µs each
#                                     way (a network between them; kms-delay, bench/src/delay.rs)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p sidecar -p kms-bench
dir=$(mktemp -d)
chmod 755 "$dir"
. bench/pg.sh
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  pg_cleanup
  rm -rf "$dir"
}
trap cleanup EXIT
[ -n "${PG_STATEMENTS:-}" ] && PG_OPTS="${PG_OPTS:-} -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
pg_start 18250
psql_kms() { as_pg "$pgbin/../bin/psql" -X -q -h 127.0.0.1 -p 18250 -U postgres kms "$@"; }
[ -n "${PG_STATEMENTS:-}" ] && psql_kms -c "CREATE EXTENSION pg_stat_statements" >/dev/null
node_url=$url
if [ -n "${PG_DELAY_US:-}" ]; then
  target/release/kms-delay 127.0.0.1:18251 127.0.0.1:18250 "$PG_DELAY_US" &
  node_url=${url/:18250/:18251}
fi
# Room for the write cells: a region's default limits (200 keys) would refuse most CreateKeys.
cat >"$dir/bench.toml" <<TOML
[engine.limits]
max_keys = 10000000
TOML
ak=benchAccessKeyId
sk=benchAccessKeySecret
start() { # name listen [store]
  mkdir -p "$dir/$1"
  [ -n "${3:-}" ] && [ -f "$dir/n0/root.key" ] && install -m 600 "$dir/n0/root.key" "$dir/$1/root.key"
  KMS_ACCESS_KEY_ID=$ak KMS_ACCESS_KEY_SECRET=$sk KMS_LOG=warn "${KMS_SIDECAR:-target/release/kms-sidecar}" --config "$dir/bench.toml" --data-dir "$dir/$1" \
    --listen "$2" ${3:+--store "$3" --node-id "$1"} >"$dir/$1.log" 2>&1 &
  for _ in $(seq 100); do curl -sf "http://$2/ping" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "sidecar $1 did not start"; cat "$dir/$1.log"; exit 1
}
start sqlite 127.0.0.1:18260
start n0 127.0.0.1:18261 "$node_url"
start n1 127.0.0.1:18262 "$node_url"
start n2 127.0.0.1:18263 "$node_url"
echo "machine: $(nproc) cores; PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}')${PG_DELAY_US:+ reached through ${PG_DELAY_US} µs each way}, fsync on; load generator and all four sidecars on the same machine"
target/release/kms-loadgen store --sqlite 127.0.0.1:18260 --nodes 127.0.0.1:18261,127.0.0.1:18262,127.0.0.1:18263 \
  --access-key-id $ak --access-key-secret $sk --seconds "${SECONDS_PER_CELL:-3}" --cells "${CELLS:-crypto,writes,propagation}"
if [ -n "${PG_STATEMENTS:-}" ]; then
  echo
  psql_kms -c "SELECT calls, round(total_exec_time::numeric, 0) AS ms, round((total_exec_time / calls)::numeric * 1000, 0) AS us_per_call,
      left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS query
    FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'kms')
    ORDER BY total_exec_time DESC LIMIT 20"
  psql_kms -c "SELECT wal_records, wal_bytes, wal_write, wal_sync FROM pg_stat_wal"
fi
