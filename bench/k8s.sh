#!/usr/bin/env bash
# The sidecar's Kubernetes sockets next to its signed HTTP API, in one run (sidecar/K8S.md):
# Encrypt/Decrypt of a 32-byte DEK over the KMS v2 socket vs the same through HTTP at
# concurrency 1, 4, 16; Mount of 10 secrets over the CSI socket vs the 10 GetSecretValue calls
# over HTTP. Prints req/s, p50/p99, the ratio and the sidecar's CPU µs per operation.
#   bench/k8s.sh                    2 s per cell
#   SECONDS_PER_CELL=5 bench/k8s.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p sidecar -p kms-bench
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT
ak=benchOwnerKey
sk=benchOwnerSecret
cat >"$dir/kms.toml" <<TOML
listen = "127.0.0.1:18195"
[[access_keys]]
id = "apiserverKey"
secret = "apiserverSecret"
principal = "user:apiserver"
[[policies]]
principal = "user:apiserver"
name = "all"
document = '''{"Version":"1","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}'''
[kubernetes.kms]
socket = "$dir/kms.sock"
key_id = "alias/bench-k8s"
principal = "user:apiserver"
[kubernetes.csi]
socket = "$dir/csi.sock"
[[kubernetes.csi.workloads]]
namespace = "bench"
service_account = "app"
principal = "user:apiserver"
TOML
KMS_ACCESS_KEY_ID=$ak KMS_ACCESS_KEY_SECRET=$sk KMS_LOG=warn \
  target/release/kms-sidecar --config "$dir/kms.toml" --data-dir "$dir/kms" >"$dir/sidecar.log" 2>&1 &
pid=$!
for _ in $(seq 50); do [ -S "$dir/csi.sock" ] && break; sleep 0.1; done
export KMS_ENDPOINT=http://127.0.0.1:18195 KMS_ACCESS_KEY_ID=$ak KMS_ACCESS_KEY_SECRET=$sk
target/release/kmsctl create-key --alias alias/bench-k8s >/dev/null
for i in $(seq 0 9); do
  printf '{"user":"app-%s","password":"%s"}' "$i" "$(head -c 12 /dev/urandom | base64)" | target/release/kmsctl create-secret "bench-$i" >/dev/null
done
target/release/kms-k8s --kms-socket "$dir/kms.sock" --csi-socket "$dir/csi.sock" --endpoint http://127.0.0.1:18195 \
  --access-key-id apiserverKey --access-key-secret apiserverSecret --pid "$pid" --seconds "${SECONDS_PER_CELL:-2}"
