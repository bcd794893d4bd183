#!/usr/bin/env bash
# Asymmetric operations through the engine (in process, one thread) next to `openssl speed` for
# the same algorithms, in one run. Prints ops/s and the ratio engine/openssl.
#   bench/asymmetric.sh          QUICK=1 bench/asymmetric.sh
set -euo pipefail
cd "$(dirname "$0")/.."
crit_args=(--noplot)
secs=3
if [ "${QUICK:-}" = 1 ]; then crit_args+=(--warm-up-time 1 --measurement-time 3); secs=1; fi
echo "== kms-core asymmetric (criterion, one thread)"
cargo bench -p kms-core --bench asymmetric -- "${crit_args[@]}" >/tmp/kms-asym-bench.log 2>&1 || { cat /tmp/kms-asym-bench.log; exit 1; }
echo "== openssl speed -seconds $secs rsa2048 rsa3072 ecdsap256 sm2 (one process)"
openssl speed -seconds "$secs" rsa2048 rsa3072 ecdsap256 sm2 2>/dev/null >/tmp/openssl-speed.txt
python3 - <<'PY'
import json, pathlib, re
text = pathlib.Path("/tmp/openssl-speed.txt").read_text()
def row(pattern):
    m = re.search(pattern + r".*?\s([\d.]+)\s+([\d.]+)\s*$", text, re.M)
    return (float(m.group(1)), float(m.group(2))) if m else (float("nan"), float("nan"))
ossl = {"rsa2048": row(r"^rsa\s+2048 bits"), "rsa3072": row(r"^rsa\s+3072 bits"),
        "p256": row(r"ecdsa \(nistp256\)"), "sm2": row(r"SM2 \(CurveSM2\)")}
root = pathlib.Path("target/criterion/asymmetric")
def ops(name):
    return 1e9 / json.loads((root / name / "new" / "estimates.json").read_text())["mean"]["point_estimate"]
rows = [
    ("sign RSA-2048 PKCS#1", "sign_rsa2048_pkcs1", ossl["rsa2048"][0]),
    ("sign RSA-2048 PSS", "sign_rsa2048_pss", ossl["rsa2048"][0]),
    ("verify RSA-2048 PKCS#1", "verify_rsa2048_pkcs1", ossl["rsa2048"][1]),
    ("decrypt RSA-2048 OAEP-256", "decrypt_rsa2048_oaep256", ossl["rsa2048"][0]),
    ("sign RSA-3072 PKCS#1", "sign_rsa3072_pkcs1", ossl["rsa3072"][0]),
    ("verify RSA-3072 PKCS#1", "verify_rsa3072_pkcs1", ossl["rsa3072"][1]),
    ("sign P-256", "sign_p256", ossl["p256"][0]),
    ("verify P-256", "verify_p256", ossl["p256"][1]),
    ("sign secp256k1", "sign_p256k", None),
    ("verify secp256k1", "verify_p256k", None),
    ("sign SM2", "sign_sm2", ossl["sm2"][0]),
    ("verify SM2", "verify_sm2", ossl["sm2"][1]),
    ("decrypt SM2PKE", "decrypt_sm2pke", None),
]
print(f"{'operation':<28}{'engine ops/s':>14}{'openssl ops/s':>15}{'ratio':>8}")
for label, name, peer in rows:
    mine = ops(name)
    if peer:
        print(f"{label:<28}{mine:>14,.0f}{peer:>15,.0f}{mine / peer:>7.2f}x")
    else:
        print(f"{label:<28}{mine:>14,.0f}{'-':>15}{'':>8}")
print("(RSA decrypt is compared with openssl's RSA sign: the same private-key operation.)")
PY
