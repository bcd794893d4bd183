#!/usr/bin/env bash
# The same engine operations with ProtectionLevel SOFTWARE and HSM (SoftHSM2 through PKCS#11) in
# one run; prints ops/s and the ratio HSM/SOFTWARE.   bench/hsm.sh     QUICK=1 bench/hsm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
crit_args=(--noplot)
if [ "${QUICK:-}" = 1 ]; then crit_args+=(--warm-up-time 1 --measurement-time 3); fi
echo "== kms-core SOFTWARE vs HSM (criterion, one thread, SoftHSM2 $(softhsm2-util --version))"
cargo bench -p kms-core --bench hsm -- "${crit_args[@]}" >/tmp/kms-hsm-bench.log 2>&1 || { cat /tmp/kms-hsm-bench.log; exit 1; }
python3 - <<'PY'
import json, pathlib
root = pathlib.Path("target/criterion/hsm")
def ops(name):
    return 1e9 / json.loads((root / name / "new" / "estimates.json").read_text())["mean"]["point_estimate"]
print(f"{'operation':<24}{'SOFTWARE ops/s':>16}{'HSM ops/s':>12}{'HSM/SOFTWARE':>14}")
for label, name in [("Encrypt 64 B AES-256", "encrypt_64b"), ("Decrypt 64 B AES-256", "decrypt_64b"),
                    ("Sign RSA-2048 PSS", "sign_rsa2048_pss"), ("Sign P-256 ECDSA", "sign_p256")]:
    s, h = ops(f"{name}_software"), ops(f"{name}_hsm")
    print(f"{label:<24}{s:>16,.0f}{h:>12,.0f}{h / s:>13.2f}x")
PY
