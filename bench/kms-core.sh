#!/usr/bin/env bash
# kms-core in-process throughput next to `openssl speed -evp aes-256-gcm` on 64-byte blocks, in
# one run on this machine. Prints ops/s for each and the ratio engine/openssl.
#   bench/kms-core.sh            full run (criterion defaults)
#   QUICK=1 bench/kms-core.sh    shorter measurement
set -euo pipefail
cd "$(dirname "$0")/.."
command -v openssl >/dev/null || { echo "openssl is needed (apt-get install openssl)"; exit 1; }

crit_args=(--noplot)
secs=3
if [ "${QUICK:-}" = 1 ]; then crit_args+=(--warm-up-time 1 --measurement-time 3); secs=1; fi

echo "== kms-core (criterion, one thread)"
cargo bench -p kms-core --bench engine -- "${crit_args[@]}" >/tmp/kms-core-bench.log 2>&1 || { cat /tmp/kms-core-bench.log; exit 1; }

echo "== openssl speed -evp aes-256-gcm -bytes 64 -seconds $secs (one process)"
ossl=$(openssl speed -evp aes-256-gcm -bytes 64 -seconds "$secs" 2>/dev/null | awk '/^AES-256-GCM|^aes-256-gcm/ {print $2}')
# openssl prints thousands of bytes per second ("1234.56k"); convert to 64-byte operations/s.
python3 - "$ossl" <<'PY'
import json, sys, pathlib
ossl_kbs = float(sys.argv[1].rstrip("k"))
ossl_ops = ossl_kbs * 1000 / 64
root = pathlib.Path("target/criterion/kms-core")
rows = []
for name in ["encrypt_64B", "encrypt_64B_with_context", "decrypt_64B", "generate_data_key_32B", "bare_aes256gcm_seal_64B"]:
    est = json.loads((root / name / "new" / "estimates.json").read_text())
    ns = est["mean"]["point_estimate"]
    rows.append((name, 1e9 / ns, ns))
print(f"{'operation':<28}{'ops/s':>14}{'ns/op':>10}{'vs openssl':>12}")
for name, ops, ns in rows:
    print(f"{name:<28}{ops:>14,.0f}{ns:>10.0f}{ops / ossl_ops:>11.2f}x")
print(f"{'openssl aes-256-gcm 64B':<28}{ossl_ops:>14,.0f}{1e9 / ossl_ops:>10.0f}{1.0:>11.2f}x")
enc = rows[0][1]
print(f"\nEncrypt target >= 300,000 ops/s on one core: {'MET' if enc >= 300_000 else 'MISSED'} ({enc:,.0f})")
PY
