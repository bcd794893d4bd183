"""alibabacloud-kms20160120 3.x (Tea/darabonba): V3 ACS3-HMAC-SHA256 by default, V1 with
signature_algorithm='v2'."""
import base64

import pytest
from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.models import Config


def client(env, sk=None, https=False, v1=False):
    return Client(Config(
        access_key_id=env.ak, access_key_secret=sk or env.sk, region_id="cn-hangzhou",
        endpoint=env.https if https else env.http, protocol="https" if https else "http",
        ca=env.ca if https else None, signature_algorithm="v2" if v1 else None))


def fails(fn, *args):
    with pytest.raises(ClientException) as e:
        fn(*args)
    return e.value


@pytest.mark.parametrize("v1", [False, True], ids=["v3", "v1"])
def test_keys_and_crypto(env, unique, v1):
    c = client(env, v1=v1)
    md = c.create_key(models.CreateKeyRequest(description="tea " + unique, enable_automatic_rotation=True,
                                              rotation_interval="604800s")).body.key_metadata
    assert md.key_spec == "Aliyun_AES_256" and md.rotation_interval == "604800s" and md.next_rotation_date
    key = md.key_id
    d = c.describe_key(models.DescribeKeyRequest(key_id=key)).body.key_metadata
    assert d.description == "tea " + unique and d.deletion_protection == "Disabled"
    page = c.list_keys(models.ListKeysRequest(page_size=100)).body
    assert page.page_size == 100 and key in [k.key_id for k in page.keys.key]
    filtered = c.list_keys(models.ListKeysRequest(filters='[{"Key":"KeySpec","Values":["Aliyun_SM4"]}]')).body
    assert key not in [k.key_id for k in filtered.keys.key]

    ctx = {"purpose": "demo", "env": "dev"}
    ct = c.encrypt(models.EncryptRequest(key_id=key, plaintext="SGVsbG8gS01TIQ==", encryption_context=ctx)).body
    assert ct.key_id == key and ct.key_version_id == d.primary_key_version
    pt = c.decrypt(models.DecryptRequest(ciphertext_blob=ct.ciphertext_blob, encryption_context=ctx)).body
    assert pt.plaintext == "SGVsbG8gS01TIQ=="
    e = fails(c.decrypt, models.DecryptRequest(ciphertext_blob=ct.ciphertext_blob, encryption_context={"env": "prod"}))
    assert (e.status_code, e.code) == (400, "InvalidParameter")

    dk = c.generate_data_key(models.GenerateDataKeyRequest(key_id=key, number_of_bytes=24, encryption_context=ctx)).body
    assert len(base64.b64decode(dk.plaintext)) == 24
    assert c.decrypt(models.DecryptRequest(ciphertext_blob=dk.ciphertext_blob, encryption_context=ctx)).body.plaintext == dk.plaintext
    wp = c.generate_data_key_without_plaintext(models.GenerateDataKeyWithoutPlaintextRequest(key_id=key, key_spec="AES_128")).body
    assert len(base64.b64decode(c.decrypt(models.DecryptRequest(ciphertext_blob=wp.ciphertext_blob)).body.plaintext)) == 16
    re = c.re_encrypt(models.ReEncryptRequest(ciphertext_blob=ct.ciphertext_blob, destination_key_id=key,
                                              source_encryption_context=ctx, destination_encryption_context={"x": "y"})).body
    assert c.decrypt(models.DecryptRequest(ciphertext_blob=re.ciphertext_blob, encryption_context={"x": "y"})).body.plaintext == "SGVsbG8gS01TIQ=="

    alias = "alias/tea-%s-%s" % ("v1" if v1 else "v3", unique)
    c.create_alias(models.CreateAliasRequest(alias_name=alias, key_id=key))
    assert c.list_aliases_by_key_id(models.ListAliasesByKeyIdRequest(key_id=key)).body.aliases.alias[0].alias_name == alias
    assert alias in [a.alias_name for a in c.list_aliases(models.ListAliasesRequest(page_size=100)).body.aliases.alias]
    c.delete_alias(models.DeleteAliasRequest(alias_name=alias))

    versions = c.list_key_versions(models.ListKeyVersionsRequest(key_id=key)).body
    assert versions.total_count == 1
    c.update_rotation_policy(models.UpdateRotationPolicyRequest(key_id=key, enable_automatic_rotation=False))
    c.update_key_description(models.UpdateKeyDescriptionRequest(key_id=key, description="changed"))
    c.set_deletion_protection(models.SetDeletionProtectionRequest(protected_resource_arn=md.arn, enable_deletion_protection=False))
    c.disable_key(models.DisableKeyRequest(key_id=key))
    e = fails(c.generate_data_key, models.GenerateDataKeyRequest(key_id=key))
    assert (e.status_code, e.code) == (409, "Rejected.Disabled")
    c.schedule_key_deletion(models.ScheduleKeyDeletionRequest(key_id=key, pending_window_in_days=7))
    c.cancel_key_deletion(models.CancelKeyDeletionRequest(key_id=key))
    assert c.describe_key(models.DescribeKeyRequest(key_id=key)).body.key_metadata.key_state == "Disabled"
    c.enable_key(models.EnableKeyRequest(key_id=key))


def test_errors_surface_as_client_exceptions(env):
    c = client(env)
    e = fails(c.describe_key, models.DescribeKeyRequest(key_id="key-doesnotexist"))
    assert (e.status_code, e.code) == (404, "Forbidden.KeyNotFound") and e.request_id
    e = fails(c.create_alias, models.CreateAliasRequest(alias_name="no-prefix", key_id="key-x"))
    assert (e.status_code, e.code) == (400, "InvalidParameter") and "AliasName" in e.message
    e = fails(c.create_key, models.CreateKeyRequest(key_spec="AES_999"))
    assert e.code == "InvalidParameter" and "KeySpec" in e.message
    e = fails(c.encrypt, models.EncryptRequest(key_id="alias/acs/oss-none", plaintext="aGk="))
    assert (e.status_code, e.code) == (404, "Forbidden.AliasNotFound")
    e = fails(client(env, sk="wrong").describe_regions)
    assert (e.status_code, e.code) == (400, "SignatureDoesNotMatch")


def test_dry_run(env):
    c = client(env)
    key = c.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
    e = fails(c.encrypt, models.EncryptRequest(key_id=key, plaintext="aGk=", dry_run="true"))
    assert e.code == "DryRunOperationError"


def test_https_with_the_generated_ca(env):
    r = client(env, https=True).describe_regions().body
    assert r.regions.region[0].region_id == "cn-hangzhou"
