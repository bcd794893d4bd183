#!/usr/bin/env bash
# The sidecar next to a bare hyper server (the HTTP ceiling on this machine), in one run:
# Encrypt, Decrypt, GenerateDataKey, GetSecretValue at concurrency 1, 4 and 16, every request signed
# with a fresh nonce; and GetSecretValue through the secrets agent (GET /v1/<name> + token). Prints
# req/s, p50/p99 latency and the server's CPU microseconds per request for both, the throughput
# ratio sidecar/bare and the CPU ratio (bare's CPU per request over the sidecar's).
#   bench/sidecar.sh              3 s per cell
#   SECONDS_PER_CELL=1 bench/sidecar.sh
#   bench/sidecar.sh soak         replay protection in bounded memory: signed Encrypt from one
#                                 access key at concurrency 16 for SOAK_SECONDS (600), the
#                                 sidecar's RSS sampled every SAMPLE_SECONDS (30); fails if the
#                                 last third's peak exceeds the first third's by > 10 % + 4 MB
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p sidecar -p kms-bench
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT
ak=benchAccessKeyId
sk=benchAccessKeySecret
KMS_ACCESS_KEY_ID=$ak KMS_ACCESS_KEY_SECRET=$sk KMS_LOG=warn \
  target/release/kms-sidecar --data-dir "$dir/kms" --listen 127.0.0.1:18190 --agent-listen 127.0.0.1:18192 >"$dir/sidecar.log" 2>&1 &
sidecar_pid=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:18190/ping >/dev/null 2>&1 && break; sleep 0.1; done
if [ "${1:-}" = soak ]; then
  echo "machine: $(nproc) cores; load generator on the same machine"
  target/release/kms-loadgen soak --sidecar 127.0.0.1:18190 --access-key-id $ak --access-key-secret $sk \
    --pid "$sidecar_pid" --seconds "${SOAK_SECONDS:-600}" --sample-seconds "${SAMPLE_SECONDS:-30}"
  exit
fi
size=$(target/release/kms-loadgen probe --sidecar 127.0.0.1:18190 --access-key-id $ak --access-key-secret $sk)
target/release/kms-loadgen bare --listen 127.0.0.1:18191 --body-bytes "$size" >"$dir/bare.log" 2>&1 &
bare_pid=$!
sleep 0.3
echo "machine: $(nproc) cores; response body ~${size} bytes; load generator on the same machine"
target/release/kms-loadgen run --sidecar 127.0.0.1:18190 --bare 127.0.0.1:18191 \
  --access-key-id $ak --access-key-secret $sk --seconds "${SECONDS_PER_CELL:-3}" \
  --agent 127.0.0.1:18192 --agent-token "$(cat "$dir/kms/agent.token")" \
  --sidecar-pid "$sidecar_pid" --bare-pid "$bare_pid"
