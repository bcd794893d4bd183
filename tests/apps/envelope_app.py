"""An application as users write it against Alibaba Cloud KMS: Alibaba's unmodified Tea SDK
(alibabacloud-kms20160120), signing as its own access key, nothing KMS-specific but the endpoint.

    envelope_app.py seal KEY TEXT      -> JSON record: the data key's blob + AES-GCM of TEXT
    envelope_app.py open RECORD_JSON   -> TEXT
    envelope_app.py secret NAME [STAGE]-> JSON {"value", "version"}
    envelope_app.py encrypt KEY        -> the error code the KMS answers (or "OK")

Reads KMS_HTTP, KMS_APP_KEY_ID and KMS_APP_KEY_SECRET from the environment.
"""
import base64
import json
import os
import sys

from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.models import Config
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CONTEXT = {"app": "orders"}


def kms():
    return Client(Config(access_key_id=os.environ["KMS_APP_KEY_ID"],
                         access_key_secret=os.environ["KMS_APP_KEY_SECRET"],
                         region_id="cn-hangzhou", endpoint=os.environ["KMS_HTTP"], protocol="http"))


def seal(key, text):
    dk = kms().generate_data_key(models.GenerateDataKeyRequest(
        key_id=key, number_of_bytes=32, encryption_context=CONTEXT)).body
    nonce = os.urandom(12)
    ct = AESGCM(base64.b64decode(dk.plaintext)).encrypt(nonce, text.encode(), None)
    return {"blob": dk.ciphertext_blob, "version": dk.key_version_id,
            "nonce": base64.b64encode(nonce).decode(), "ct": base64.b64encode(ct).decode()}


def open_record(record):
    dk = kms().decrypt(models.DecryptRequest(ciphertext_blob=record["blob"], encryption_context=CONTEXT)).body
    return AESGCM(base64.b64decode(dk.plaintext)).decrypt(
        base64.b64decode(record["nonce"]), base64.b64decode(record["ct"]), None).decode()


def main(argv):
    cmd = argv[1]
    if cmd == "seal":
        print(json.dumps(seal(argv[2], argv[3])))
    elif cmd == "open":
        print(open_record(json.loads(argv[2])))
    elif cmd == "secret":
        req = models.GetSecretValueRequest(secret_name=argv[2], version_stage=argv[3] if len(argv) > 3 else None)
        body = kms().get_secret_value(req).body
        print(json.dumps({"value": body.secret_data, "version": body.version_id}))
    elif cmd == "encrypt":
        try:
            kms().encrypt(models.EncryptRequest(key_id=argv[2], plaintext="eA=="))
            print("OK")
        except ClientException as e:
            print(e.code)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
