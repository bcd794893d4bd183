"""Asymmetric keys and BYOK through the official Tea SDK, cross-checked with the openssl CLI exactly
as the user documents use it, and with the `cryptography` package for the ciphertext blob format."""
import base64
import hashlib
import os
import subprocess

import pytest
from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.models import Config
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

b64 = lambda b: base64.b64encode(b).decode()
unb64 = base64.b64decode


@pytest.fixture
def kms(env):
    return Client(Config(access_key_id=env.ak, access_key_secret=env.sk, region_id="cn-hangzhou",
                         endpoint=env.http, protocol="http"))


def openssl(*args, input=None):
    r = subprocess.run(["openssl", *args], input=input, capture_output=True)
    assert r.returncode == 0, (args, r.stderr.decode())
    return r.stdout


def new_key(kms, spec, usage):
    key = kms.create_key(models.CreateKeyRequest(key_spec=spec, key_usage=usage)).body.key_metadata.key_id
    versions = kms.list_key_versions(models.ListKeyVersionsRequest(key_id=key)).body.key_versions.key_version
    return key, versions[0].key_version_id


def public_pem(kms, key, version, path):
    pem = kms.get_public_key(models.GetPublicKeyRequest(key_id=key, key_version_id=version)).body.public_key
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    with open(path, "w") as f:
        f.write(pem)
    return pem


@pytest.mark.parametrize("spec", ["RSA_2048", "RSA_3072"])
@pytest.mark.parametrize("alg,pkeyopts", [
    ("RSAES_OAEP_SHA_256", ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256",
                            "-pkeyopt", "rsa_mgf1_md:sha256"]),
    ("RSAES_OAEP_SHA_1", ["-pkeyopt", "rsa_padding_mode:oaep"]),
])
def test_openssl_encrypts_kms_decrypts(kms, tmp_path, spec, alg, pkeyopts):
    key, version = new_key(kms, spec, "ENCRYPT/DECRYPT")
    public_pem(kms, key, version, tmp_path / "pub.pem")
    secret = os.urandom(100)
    ct = openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", str(tmp_path / "pub.pem"), *pkeyopts, input=secret)
    pt = kms.asymmetric_decrypt(models.AsymmetricDecryptRequest(
        key_id=key, key_version_id=version, algorithm=alg, ciphertext_blob=b64(ct))).body.plaintext
    assert unb64(pt) == secret
    with pytest.raises(ClientException) as e:  # over the documented limit
        kms.asymmetric_encrypt(models.AsymmetricEncryptRequest(
            key_id=key, key_version_id=version, algorithm=alg, plaintext=b64(b"x" * 343)))
    assert e.value.code == "InvalidParameter"


@pytest.mark.parametrize("spec,alg,sigopts", [
    ("RSA_2048", "RSA_PSS_SHA_256", ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:-1"]),
    ("RSA_2048", "RSA_PKCS1_SHA_256", []),
    ("RSA_3072", "RSA_PSS_SHA_256", ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:-1"]),
    ("EC_P256", "ECDSA_SHA_256", []),
    ("EC_P256K", "ECDSA_SHA_256", []),
])
def test_kms_signs_openssl_verifies(kms, tmp_path, spec, alg, sigopts):
    key, version = new_key(kms, spec, "SIGN/VERIFY")
    public_pem(kms, key, version, tmp_path / "pub.pem")
    message = os.urandom(1000)
    (tmp_path / "msg").write_bytes(message)
    digest = hashlib.sha256(message).digest()
    sig = unb64(kms.asymmetric_sign(models.AsymmetricSignRequest(
        key_id=key, key_version_id=version, algorithm=alg, digest=b64(digest))).body.value)
    (tmp_path / "sig").write_bytes(sig)
    out = openssl("dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"), "-signature", str(tmp_path / "sig"),
                  *sigopts, str(tmp_path / "msg"))
    assert b"Verified OK" in out
    ok = kms.asymmetric_verify(models.AsymmetricVerifyRequest(
        key_id=key, key_version_id=version, algorithm=alg, digest=b64(digest), value=b64(sig))).body.value
    assert ok is True
    tampered = bytearray(sig)
    tampered[len(sig) // 2] ^= 1
    ok = kms.asymmetric_verify(models.AsymmetricVerifyRequest(
        key_id=key, key_version_id=version, algorithm=alg, digest=b64(digest), value=b64(bytes(tampered)))).body.value
    assert ok is False
    with pytest.raises(ClientException) as e:
        kms.asymmetric_sign(models.AsymmetricSignRequest(
            key_id=key, key_version_id=version, algorithm=alg, digest=b64(digest[:20])))
    assert (e.value.status_code, e.value.code) == (400, "InvalidParameter")


# GB/T 32918 parameters of the SM2 curve, to compute Z_A = SM3(ENTL ‖ ID ‖ a ‖ b ‖ xG ‖ yG ‖ xA ‖ yA).
SM2_A = bytes.fromhex("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC")
SM2_B = bytes.fromhex("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93")
SM2_GX = bytes.fromhex("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7")
SM2_GY = bytes.fromhex("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0")
SM2_ID = b"1234567812345678"


def sm3(data):
    return hashlib.new("sm3", data).digest()


def test_sm2dsa_over_sm3_of_z_and_message(kms, tmp_path):
    key, version = new_key(kms, "EC_SM2", "SIGN/VERIFY")
    pem = public_pem(kms, key, version, tmp_path / "pub.pem")
    point = unb64("".join(pem.strip().splitlines()[1:-1]))[-65:]
    assert point[0] == 4
    z = sm3(len(SM2_ID * 8).to_bytes(2, "big") + SM2_ID + SM2_A + SM2_B + SM2_GX + SM2_GY + point[1:33] + point[33:])
    message = b"GB/T 32918 interop"
    (tmp_path / "msg").write_bytes(message)
    e = sm3(z + message)
    sig = unb64(kms.asymmetric_sign(models.AsymmetricSignRequest(
        key_id=key, key_version_id=version, algorithm="SM2DSA", digest=b64(e))).body.value)
    (tmp_path / "sig").write_bytes(sig)
    out = openssl("dgst", "-sm3", "-verify", str(tmp_path / "pub.pem"), "-signature", str(tmp_path / "sig"),
                  "-sigopt", "distid:1234567812345678", str(tmp_path / "msg"))
    assert b"Verified OK" in out


def test_openssl_sm2_encrypts_kms_decrypts(kms, tmp_path):
    key, version = new_key(kms, "EC_SM2", "ENCRYPT/DECRYPT")
    public_pem(kms, key, version, tmp_path / "pub.pem")
    secret = os.urandom(64)
    ct = openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", str(tmp_path / "pub.pem"), input=secret)
    pt = kms.asymmetric_decrypt(models.AsymmetricDecryptRequest(
        key_id=key, key_version_id=version, algorithm="SM2PKE", ciphertext_blob=b64(ct))).body.plaintext
    assert unb64(pt) == secret


def open_blob_locally(blob, material, context=b""):
    """Decrypts a ciphertext blob with the layout of kms-core/FORMAT.md, outside the KMS."""
    assert blob[:3] == b"km\x01" and blob[3] == 1  # AES-256-GCM
    n = blob[4]
    header_len = 5 + n + 16 + 12
    nonce = blob[5 + n + 16:header_len]
    return AESGCM(material).decrypt(nonce, blob[header_len:], blob[:header_len] + context)


@pytest.mark.parametrize("alg,wrap", [
    ("RSAES_OAEP_SHA_256", ["pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-pkeyopt", "rsa_padding_mode:oaep",
                            "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"]),
    ("RSAES_OAEP_SHA_1", ["rsautl", "-encrypt", "-oaep", "-pubin", "-keyform", "DER"]),
    ("RSAES_PKCS1_V1_5", ["pkeyutl", "-encrypt", "-pubin", "-keyform", "DER"]),
])
def test_byok_walkthrough_with_openssl(kms, tmp_path, alg, wrap):
    md = kms.create_key(models.CreateKeyRequest(origin="EXTERNAL")).body.key_metadata
    assert md.key_state == "PendingImport"
    params = kms.get_parameters_for_import(models.GetParametersForImportRequest(
        key_id=md.key_id, wrapping_key_spec="RSA_2048", wrapping_algorithm=alg)).body
    assert params.token_expire_time.endswith("Z")
    # The user guide's steps: random material, the base64 public key to DER, wrap, base64.
    openssl("rand", "-out", str(tmp_path / "KeyMaterial.bin"), "32")
    (tmp_path / "PublicKey.bin").write_bytes(openssl("base64", "-d", "-A", input=params.public_key.encode()))
    wrapped = openssl(*wrap, "-inkey", str(tmp_path / "PublicKey.bin"), "-in", str(tmp_path / "KeyMaterial.bin"))
    kms.import_key_material(models.ImportKeyMaterialRequest(
        key_id=md.key_id, encrypted_key_material=b64(wrapped), import_token=params.import_token,
        key_material_expire_unix=0))
    assert kms.describe_key(models.DescribeKeyRequest(key_id=md.key_id)).body.key_metadata.key_state == "Enabled"
    ct = kms.encrypt(models.EncryptRequest(key_id=md.key_id, plaintext=b64(b"bring your own key"),
                                           encryption_context={"k": "v"})).body.ciphertext_blob
    material = (tmp_path / "KeyMaterial.bin").read_bytes()
    assert open_blob_locally(unb64(ct), material, b'{"k":"v"}') == b"bring your own key"

    other = openssl("rand", "32")
    (tmp_path / "Other.bin").write_bytes(other)
    wrapped_other = openssl(*wrap, "-inkey", str(tmp_path / "PublicKey.bin"), "-in", str(tmp_path / "Other.bin"))
    with pytest.raises(ClientException) as e:
        kms.import_key_material(models.ImportKeyMaterialRequest(
            key_id=md.key_id, encrypted_key_material=b64(wrapped_other), import_token=params.import_token,
            key_material_expire_unix=0))
    assert (e.value.status_code, e.value.code) == (400, "InvalidKeyMaterial")
    kms.delete_key_material(models.DeleteKeyMaterialRequest(key_id=md.key_id))
    with pytest.raises(ClientException) as e:
        kms.decrypt(models.DecryptRequest(ciphertext_blob=ct, encryption_context={"k": "v"}))
    assert (e.value.status_code, e.value.code) == (409, "Rejected.PendingImport")


def test_byok_with_sm2_wrapping(kms, tmp_path):
    key = kms.create_key(models.CreateKeyRequest(origin="EXTERNAL", key_spec="Aliyun_SM4")).body.key_metadata.key_id
    params = kms.get_parameters_for_import(models.GetParametersForImportRequest(
        key_id=key, wrapping_key_spec="EC_SM2", wrapping_algorithm="SM2PKE")).body
    (tmp_path / "PublicKey.bin").write_bytes(unb64(params.public_key))
    material = os.urandom(16)
    wrapped = openssl("pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-inkey", str(tmp_path / "PublicKey.bin"),
                      input=material)
    kms.import_key_material(models.ImportKeyMaterialRequest(
        key_id=key, encrypted_key_material=b64(wrapped), import_token=params.import_token, key_material_expire_unix=0))
    dk = kms.generate_data_key(models.GenerateDataKeyRequest(key_id=key)).body
    assert unb64(kms.decrypt(models.DecryptRequest(ciphertext_blob=dk.ciphertext_blob)).body.plaintext) == unb64(dk.plaintext)
    with pytest.raises(ClientException) as e:  # wrong length for SM4
        wrong = openssl("pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-inkey", str(tmp_path / "PublicKey.bin"),
                        input=os.urandom(32))
        kms.import_key_material(models.ImportKeyMaterialRequest(
            key_id=key, encrypted_key_material=b64(wrong), import_token=params.import_token, key_material_expire_unix=0))
    assert e.value.code == "InvalidKeyMaterial"


@pytest.mark.parametrize("kind", ["rsa", "sm2"])
def test_exported_data_keys_open_with_openssl(kms, tmp_path, kind):
    priv = tmp_path / "mine.pem"
    if kind == "rsa":
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(priv))
        spec, alg = "RSA_2048", "RSAES_OAEP_SHA_256"
        opts = ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"]
    else:
        openssl("genpkey", "-algorithm", "SM2", "-out", str(priv))
        spec, alg, opts = "EC_SM2", "SM2PKE", []
    public_der = openssl("pkey", "-in", str(priv), "-pubout", "-outform", "DER")
    key = kms.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
    g = kms.generate_and_export_data_key(models.GenerateAndExportDataKeyRequest(
        key_id=key, public_key_blob=b64(public_der), wrapping_key_spec=spec, wrapping_algorithm=alg,
        number_of_bytes=32)).body
    (tmp_path / "exported").write_bytes(unb64(g.exported_data_key))
    mine = openssl("pkeyutl", "-decrypt", "-inkey", str(priv), "-in", str(tmp_path / "exported"), *opts)
    assert mine == unb64(kms.decrypt(models.DecryptRequest(ciphertext_blob=g.ciphertext_blob)).body.plaintext)
    x = kms.export_data_key(models.ExportDataKeyRequest(
        ciphertext_blob=g.ciphertext_blob, public_key_blob=b64(public_der), wrapping_key_spec=spec,
        wrapping_algorithm=alg)).body
    (tmp_path / "exported2").write_bytes(unb64(x.exported_data_key))
    assert openssl("pkeyutl", "-decrypt", "-inkey", str(priv), "-in", str(tmp_path / "exported2"), *opts) == mine
