#!/usr/bin/env bash
# Replay protection in bounded memory: signed Encrypt from one access key at concurrency 16 for
# SOAK_SECONDS (default 600), sampling the sidecar's RSS every SAMPLE_SECONDS (default 30). Fails if
# the RSS of the last third of the run exceeds the first third's by more than 10 % + 4 MB.
#   bench/soak.sh                                  the 10-minute run (README figures)
#   SOAK_SECONDS=60 SAMPLE_SECONDS=10 bench/soak.sh   a short one
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p sidecar -p kms-bench
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT
ak=soakAccessKeyId
sk=soakAccessKeySecret
KMS_ACCESS_KEY_ID=$ak KMS_ACCESS_KEY_SECRET=$sk KMS_LOG=warn \
  target/release/kms-sidecar --data-dir "$dir/kms" --listen 127.0.0.1:18196 >"$dir/sidecar.log" 2>&1 &
pid=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:18196/ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "machine: $(nproc) cores; load generator on the same machine"
target/release/kms-loadgen soak --sidecar 127.0.0.1:18196 --access-key-id $ak --access-key-secret $sk \
  --pid "$pid" --seconds "${SOAK_SECONDS:-600}" --sample-seconds "${SAMPLE_SECONDS:-30}"
