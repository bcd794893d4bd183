#!/usr/bin/env bash
# The cost of authorisation: Encrypt as the owner (no policy evaluation) next to Encrypt as a user
# whose 20-statement policy is evaluated on every request, in one run against one sidecar.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p sidecar -p kms-bench
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$dir"' EXIT
python3 - "$dir/kms.toml" <<'PY'
import json, sys
st = []
# 18 statements that do not match an Encrypt on the benchmark key (other actions, other keys,
# conditions that fail), one Deny that does not apply, and the Allow that does.
for i in range(9):
    st.append({"Effect": "Allow", "Action": [f"kms:Describe*", f"kms:List*"], "Resource": f"acs:kms:*:*:key/key-other{i}"})
    st.append({"Effect": "Allow", "Action": "kms:Encrypt", "Resource": "*", "Condition": {"StringEquals": {"kms:tag/Project": f"Other{i}"}}})
st.append({"Effect": "Deny", "Action": "kms:*", "Resource": "*", "Condition": {"NotIpAddress": {"acs:SourceIp": ["127.0.0.0/8", "::1"]}}})
st.append({"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "acs:kms:*:*:key/*", "Condition": {"StringEqualsIgnoreCase": {"kms:tag/Project": "apollo"}}})
assert len(st) == 20
doc = json.dumps({"Version": "1", "Statement": st})
open(sys.argv[1], "w").write(f'''
[[access_keys]]
id = "benchUserKey"
secret = "benchUserSecret"
principal = "user:bench"

[[policies]]
principal = "user:bench"
name = "twenty-statements"
document = \'\'\'{doc}\'\'\'
''')
PY
KMS_ACCESS_KEY_ID=benchOwnerKey KMS_ACCESS_KEY_SECRET=benchOwnerSecret KMS_LOG=warn \
  target/release/kms-sidecar --config "$dir/kms.toml" --data-dir "$dir/kms" --listen 127.0.0.1:18193 >"$dir/sidecar.log" 2>&1 &
for _ in $(seq 50); do curl -sf http://127.0.0.1:18193/ping >/dev/null 2>&1 && break; sleep 0.1; done
echo "Encrypt 64 B: owner (no policy) vs user:bench (20-statement policy), same sidecar, same run"
target/release/kms-loadgen policy --sidecar 127.0.0.1:18193 --owner-id benchOwnerKey --owner-secret benchOwnerSecret \
  --user-id benchUserKey --user-secret benchUserSecret --seconds "${SECONDS_PER_CELL:-3}"
