"""aliyun-python-sdk-core + aliyun-python-sdk-kms (AcsClient, V1 HMAC-SHA1 signatures)."""
import base64
import json

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest
from aliyunsdkkms.request.v20160120 import (
    CancelKeyDeletionRequest, CreateAliasRequest, CreateKeyRequest, CreateKeyVersionRequest, DecryptRequest,
    DeleteAliasRequest, DescribeKeyRequest, DescribeKeyVersionRequest, DescribeRegionsRequest, DisableKeyRequest,
    EnableKeyRequest, EncryptRequest, GenerateDataKeyRequest, GenerateDataKeyWithoutPlaintextRequest,
    ListAliasesByKeyIdRequest, ListAliasesRequest, ListKeysRequest, ListKeyVersionsRequest, ReEncryptRequest,
    ScheduleKeyDeletionRequest, SetDeletionProtectionRequest, UpdateAliasRequest, UpdateKeyDescriptionRequest,
    UpdateRotationPolicyRequest)


def client(env, ak=None, sk=None, https=False):
    c = AcsClient(ak or env.ak, sk or env.sk, "cn-hangzhou", verify=env.ca if https else None)
    c._kms_endpoint = env.https if https else env.http
    c._kms_proto = "https" if https else "http"
    return c


def call(c, req, **params):
    req.set_endpoint(c._kms_endpoint)
    req.set_protocol_type(c._kms_proto)
    for k, v in params.items():
        getattr(req, "set_" + k)(v)
    return json.loads(c.do_action_with_exception(req))


def err(c, req, **params):
    with pytest.raises(ServerException) as e:
        call(c, req, **params)
    return e.value


def new_key(c, **params):
    return call(c, CreateKeyRequest.CreateKeyRequest(), **params)["KeyMetadata"]["KeyId"]


def test_key_lifecycle(env):
    c = client(env)
    md = call(c, CreateKeyRequest.CreateKeyRequest(), Description="py-core key", KeySpec="Aliyun_SM4",
              EnableAutomaticRotation=True, RotationInterval="30d")["KeyMetadata"]
    key = md["KeyId"]
    assert md["KeySpec"] == "Aliyun_SM4" and md["KeyState"] == "Enabled" and md["Origin"] == "Aliyun_KMS"
    assert md["AutomaticRotation"] == "Enabled" and md["RotationInterval"] == "2592000s"
    assert md["Arn"].endswith(":key/" + key)
    desc = "密钥 ✓ a+b=c&d/e?f*g~h'i(j)k!l%20"
    call(c, UpdateKeyDescriptionRequest.UpdateKeyDescriptionRequest(), KeyId=key, Description=desc)
    d = call(c, DescribeKeyRequest.DescribeKeyRequest(), KeyId=key)["KeyMetadata"]
    assert d["Description"] == desc and d["DeletionProtection"] == "Disabled"
    keys = call(c, ListKeysRequest.ListKeysRequest(), PageSize=100, PageNumber=1)
    assert isinstance(keys["TotalCount"], int) and isinstance(keys["PageSize"], int)
    assert key in [k["KeyId"] for k in keys["Keys"]["Key"]]

    call(c, DisableKeyRequest.DisableKeyRequest(), KeyId=key)
    e = err(c, EncryptRequest.EncryptRequest(), KeyId=key, Plaintext="aGk=")
    assert (e.get_http_status(), e.get_error_code()) == (409, "Rejected.Disabled")
    call(c, EnableKeyRequest.EnableKeyRequest(), KeyId=key)

    call(c, ScheduleKeyDeletionRequest.ScheduleKeyDeletionRequest(), KeyId=key, PendingWindowInDays=7)
    d = call(c, DescribeKeyRequest.DescribeKeyRequest(), KeyId=key)["KeyMetadata"]
    assert d["KeyState"] == "PendingDeletion" and d["DeleteDate"] and d["AutomaticRotation"] == "Suspended"
    e = err(c, EnableKeyRequest.EnableKeyRequest(), KeyId=key)
    assert (e.get_http_status(), e.get_error_code()) == (409, "Rejected.StateModifiedFailed")
    call(c, CancelKeyDeletionRequest.CancelKeyDeletionRequest(), KeyId=key)

    call(c, SetDeletionProtectionRequest.SetDeletionProtectionRequest(), ProtectedResourceArn=md["Arn"],
         EnableDeletionProtection=True, DeletionProtectionDescription="prod")
    e = err(c, ScheduleKeyDeletionRequest.ScheduleKeyDeletionRequest(), KeyId=key, PendingWindowInDays=7)
    assert e.get_error_code() == "Rejected.StateModifiedFailed" and "deletion protection" in e.get_error_msg()
    e = err(c, ScheduleKeyDeletionRequest.ScheduleKeyDeletionRequest(), KeyId=key, PendingWindowInDays=3)
    assert (e.get_http_status(), e.get_error_code()) == (400, "InvalidParameter")

    call(c, UpdateRotationPolicyRequest.UpdateRotationPolicyRequest(), KeyId=key, EnableAutomaticRotation=False)
    assert call(c, DescribeKeyRequest.DescribeKeyRequest(), KeyId=key)["KeyMetadata"]["AutomaticRotation"] == "Disabled"
    e = err(c, UpdateRotationPolicyRequest.UpdateRotationPolicyRequest(), KeyId=key, EnableAutomaticRotation=True,
            RotationInterval="3d")
    assert e.get_error_code() == "InvalidParameter" and "RotationInterval" in e.get_error_msg()

    e = err(c, CreateKeyVersionRequest.CreateKeyVersionRequest(), KeyId=key)
    assert (e.get_http_status(), e.get_error_code()) == (400, "Rejected.UnsupportedOperation")
    versions = call(c, ListKeyVersionsRequest.ListKeyVersionsRequest(), KeyId=key)
    assert versions["TotalCount"] == 1
    v = versions["KeyVersions"]["KeyVersion"][0]
    got = call(c, DescribeKeyVersionRequest.DescribeKeyVersionRequest(), KeyId=key, KeyVersionId=v["KeyVersionId"])
    assert got["KeyVersion"]["KeyVersionId"] == v["KeyVersionId"] == d["PrimaryKeyVersion"]
    e = err(c, DescribeKeyVersionRequest.DescribeKeyVersionRequest(), KeyId=key, KeyVersionId="nope")
    assert (e.get_http_status(), e.get_error_code()) == (404, "Forbidden.KeyVersionNotFound")


def test_aliases(env, unique):
    c = client(env)
    a, b = new_key(c), new_key(c)
    alias = "alias/py-core-" + unique
    call(c, CreateAliasRequest.CreateAliasRequest(), AliasName=alias, KeyId=a)
    e = err(c, CreateAliasRequest.CreateAliasRequest(), AliasName=alias, KeyId=b)
    assert (e.get_http_status(), e.get_error_code()) == (400, "AliasAlreadyExists")
    listed = call(c, ListAliasesRequest.ListAliasesRequest(), PageSize=100)
    assert alias in [x["AliasName"] for x in listed["Aliases"]["Alias"]]
    by_key = call(c, ListAliasesByKeyIdRequest.ListAliasesByKeyIdRequest(), KeyId=a)
    assert by_key["Aliases"]["Alias"][0]["AliasArn"].endswith(":" + alias)
    call(c, UpdateAliasRequest.UpdateAliasRequest(), AliasName=alias, KeyId=b)
    assert call(c, EncryptRequest.EncryptRequest(), KeyId=alias, Plaintext="aGk=")["KeyId"] == b
    call(c, DeleteAliasRequest.DeleteAliasRequest(), AliasName=alias)
    e = err(c, DescribeKeyRequest.DescribeKeyRequest(), KeyId=alias)
    assert (e.get_http_status(), e.get_error_code()) == (404, "Forbidden.AliasNotFound")


def test_envelope_encryption(env):
    c = client(env)
    key = new_key(c)
    ctx = json.dumps({"purpose": "demo", "env": "dev"})  # json.dumps puts spaces in
    dk = call(c, GenerateDataKeyRequest.GenerateDataKeyRequest(), KeyId=key, KeySpec="AES_256", EncryptionContext=ctx)
    assert len(base64.b64decode(dk["Plaintext"])) == 32 and dk["KeyVersionId"]
    back = call(c, DecryptRequest.DecryptRequest(), CiphertextBlob=dk["CiphertextBlob"],
                EncryptionContext='{"env":"dev","purpose":"demo"}')
    assert back["Plaintext"] == dk["Plaintext"] and back["KeyId"] == key
    e = err(c, DecryptRequest.DecryptRequest(), CiphertextBlob=dk["CiphertextBlob"], EncryptionContext='{"env":"prod"}')
    assert (e.get_http_status(), e.get_error_code()) == (400, "InvalidParameter")
    e = err(c, DecryptRequest.DecryptRequest(), CiphertextBlob=dk["CiphertextBlob"])
    assert e.get_error_code() == "InvalidParameter"
    blob = bytearray(base64.b64decode(dk["CiphertextBlob"]))
    blob[-1] ^= 1
    e = err(c, DecryptRequest.DecryptRequest(), CiphertextBlob=base64.b64encode(bytes(blob)).decode(), EncryptionContext=ctx)
    assert e.get_error_code() == "InvalidParameter"

    wp = call(c, GenerateDataKeyWithoutPlaintextRequest.GenerateDataKeyWithoutPlaintextRequest(), KeyId=key, NumberOfBytes=16)
    assert "Plaintext" not in wp
    assert len(base64.b64decode(call(c, DecryptRequest.DecryptRequest(), CiphertextBlob=wp["CiphertextBlob"])["Plaintext"])) == 16

    other = new_key(c, KeySpec="Aliyun_SM4")
    ct = call(c, EncryptRequest.EncryptRequest(), KeyId=key, Plaintext=base64.b64encode(b"Hello KMS!").decode())
    moved = call(c, ReEncryptRequest.ReEncryptRequest(), CiphertextBlob=ct["CiphertextBlob"], DestinationKeyId=other,
                 DestinationEncryptionContext='{"to":"sm4"}')
    assert moved["KeyId"] == other
    pt = call(c, DecryptRequest.DecryptRequest(), CiphertextBlob=moved["CiphertextBlob"], EncryptionContext='{"to":"sm4"}')
    assert base64.b64decode(pt["Plaintext"]) == b"Hello KMS!"

    e = err(c, EncryptRequest.EncryptRequest(), KeyId=key, Plaintext=base64.b64encode(b"x" * 6145).decode())
    assert e.get_error_code() == "InvalidParameter" and "Plaintext" in e.get_error_msg()
    e = err(c, EncryptRequest.EncryptRequest(), KeyId=key)
    assert (e.get_http_status(), e.get_error_code()) == (400, "MissingParameter")
    e = err(c, EncryptRequest.EncryptRequest(), KeyId="key-doesnotexist", Plaintext="aGk=")
    assert (e.get_http_status(), e.get_error_code()) == (404, "Forbidden.KeyNotFound")
    assert e.get_error_msg().startswith("The specified Key is not found.")


def test_describe_regions_over_https_with_the_generated_ca(env):
    c = client(env, https=True)
    r = call(c, DescribeRegionsRequest.DescribeRegionsRequest())
    assert r["Regions"]["Region"][0]["RegionId"] == "cn-hangzhou" and r["RequestId"]


def test_authentication_errors(env):
    e = err(client(env, sk="wrong-secret"), DescribeRegionsRequest.DescribeRegionsRequest())
    # py-core compares the server's string to sign with its own and, when equal, reports a wrong secret.
    assert e.get_error_code() == "InvalidAccessKeySecret"
    e = err(client(env, ak="LTAInosuchkey"), DescribeRegionsRequest.DescribeRegionsRequest())
    assert (e.get_http_status(), e.get_error_code()) == (404, "InvalidAccessKeyId.NotFound")
    c = client(env)
    req = CommonRequest(domain=env.http, version="2016-01-20", action_name="NoSuchAction")
    req.set_protocol_type("http")
    with pytest.raises(ServerException) as e:
        c.do_action_with_exception(req)
    assert (e.value.get_http_status(), e.value.get_error_code()) == (404, "InvalidAction.NotFound")


def test_service_key_for_oss(env):
    oss = client(env, ak=env.oss_ak, sk=env.oss_sk)
    dk = call(oss, GenerateDataKeyRequest.GenerateDataKeyRequest(), KeyId="alias/acs/oss",
              EncryptionContext='{"bucket":"b1"}')
    owner = client(env)
    md = call(owner, DescribeKeyRequest.DescribeKeyRequest(), KeyId="alias/acs/oss")["KeyMetadata"]
    assert md["Creator"] == "OSS" and md["KeyId"] == dk["KeyId"]
    e = err(owner, DisableKeyRequest.DisableKeyRequest(), KeyId=md["KeyId"])
    assert (e.get_http_status(), e.get_error_code()) == (400, "Rejected.UnsupportedOperation")
    e = err(owner, DeleteAliasRequest.DeleteAliasRequest(), AliasName="alias/acs/oss")
    assert e.get_error_code() == "Rejected.UnsupportedOperation"
