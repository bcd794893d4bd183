"""ProtectionLevel HSM through the unmodified Tea SDK: keys generated in the sidecar's PKCS#11 token
(SoftHSM2), used over the wire, signatures checked locally with `cryptography`."""
import base64
import hashlib
import os

import pytest
from alibabacloud_kms20160120 import models
from alibabacloud_tea_openapi.exceptions import ClientException
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

from test_py_tea import client

pytestmark = pytest.mark.skipif(os.environ.get("KMS_HSM") != "1", reason="sidecar started without a token")


def hsm_key(c, spec, usage=None):
    md = c.create_key(models.CreateKeyRequest(key_spec=spec, key_usage=usage, protection_level="HSM")).body.key_metadata
    assert md.protection_level == "HSM"
    return md.key_id


def first_version(c, key):
    return c.list_key_versions(models.ListKeyVersionsRequest(key_id=key)).body.key_versions.key_version[0].key_version_id


def test_symmetric_hsm_key(env):
    c = client(env)
    key = hsm_key(c, "Aliyun_AES_256")
    ctx = {"volume": "hsm"}
    ct = c.encrypt(models.EncryptRequest(key_id=key, plaintext="aW4gdGhlIHRva2Vu", encryption_context=ctx)).body
    assert c.decrypt(models.DecryptRequest(ciphertext_blob=ct.ciphertext_blob, encryption_context=ctx)).body.plaintext == "aW4gdGhlIHRva2Vu"
    with pytest.raises(ClientException) as e:
        c.decrypt(models.DecryptRequest(ciphertext_blob=ct.ciphertext_blob, encryption_context={"volume": "other"}))
    assert (e.value.status_code, e.value.code) == (400, "InvalidParameter")
    dk = c.generate_data_key(models.GenerateDataKeyRequest(key_id=key, number_of_bytes=32)).body
    assert c.decrypt(models.DecryptRequest(ciphertext_blob=dk.ciphertext_blob)).body.plaintext == dk.plaintext


def test_key_pairs_sign_in_the_token(env):
    c = client(env)
    digest = hashlib.sha256(b"signed by the HSM").digest()
    for spec, alg in [("RSA_2048", "RSA_PSS_SHA_256"), ("RSA_2048", "RSA_PKCS1_SHA_256"), ("EC_P256", "ECDSA_SHA_256")]:
        key = hsm_key(c, spec, "SIGN/VERIFY")
        v = first_version(c, key)
        sig = base64.b64decode(c.asymmetric_sign(models.AsymmetricSignRequest(
            key_id=key, key_version_id=v, algorithm=alg, digest=base64.b64encode(digest).decode())).body.value)
        pem = c.get_public_key(models.GetPublicKeyRequest(key_id=key, key_version_id=v)).body.public_key
        public = serialization.load_pem_public_key(pem.encode())
        prehashed = utils.Prehashed(hashes.SHA256())
        if alg == "RSA_PSS_SHA_256":
            public.verify(sig, digest, padding.PSS(padding.MGF1(hashes.SHA256()), 32), prehashed)
        elif alg == "RSA_PKCS1_SHA_256":
            public.verify(sig, digest, padding.PKCS1v15(), prehashed)
        else:
            public.verify(sig, digest, ec.ECDSA(prehashed))


def test_what_the_token_cannot_do_is_named(env):
    c = client(env)
    with pytest.raises(ClientException) as e:
        c.create_key(models.CreateKeyRequest(key_spec="Aliyun_SM4", protection_level="HSM"))
    assert (e.value.status_code, e.value.code) == (400, "Unsupported.ProtectionLevel")
    assert "SM4" in e.value.message
