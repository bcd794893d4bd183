"""Secrets Manager, tags and GetRandomPassword through Alibaba's clients: aliyun-secret-manager-client
(the cache client apps use), py-core (V1) and py-tea (V3)."""
import json
import string

import pytest
from alibaba_cloud_secretsmanager_client.model.region_info import RegionInfo
from alibaba_cloud_secretsmanager_client.secret_manager_cache_client_builder import SecretManagerCacheClientBuilder
from alibaba_cloud_secretsmanager_client.service.default_secret_manager_client_builder import \
    DefaultSecretManagerClientBuilder
from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.models import Config
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.request import CommonRequest


@pytest.fixture
def tea(env):
    return Client(Config(access_key_id=env.ak, access_key_secret=env.sk, region_id="cn-hangzhou",
                         endpoint=env.http, protocol="http"))


@pytest.fixture
def core(env):
    client = AcsClient(env.ak, env.sk, "cn-hangzhou")

    def call(action, **params):
        req = CommonRequest(domain=env.http, version="2016-01-20", action_name=action)
        req.set_protocol_type("http")
        req.set_method("POST")
        for k, v in params.items():
            req.add_query_param(k, v)
        return json.loads(client.do_action_with_exception(req))
    return call


def test_secrets_manager_client_reads_and_follows_rotation(env, tea, unique):
    name = "app/db-" + unique
    tea.create_secret(models.CreateSecretRequest(secret_name=name, secret_data='{"user":"app","password":"p@ss w+rd"}',
                                                 version_id="v1"))
    kms = DefaultSecretManagerClientBuilder.standard().with_access_key(env.ak, env.sk) \
        .add_region_info(RegionInfo("cn-hangzhou", endpoint="http://" + env.http)).build()
    cache = SecretManagerCacheClientBuilder.new_cache_client_builder(kms).build()
    info = cache.get_secret_info(name)
    assert json.loads(info.secret_value) == {"user": "app", "password": "p@ss w+rd"}
    assert info.secret_data_type == "text" and info.version_id == "v1"
    # Rotation by PutSecretValue: the client sees the new ACSCurrent after a refresh.
    tea.put_secret_value(models.PutSecretValueRequest(secret_name=name, version_id="v2", secret_data="rotated"))
    cache.refresh_now(name)
    assert cache.get_secret_info(name).secret_value == "rotated"
    previous = tea.get_secret_value(models.GetSecretValueRequest(secret_name=name, version_stage="ACSPrevious")).body
    assert previous.version_id == "v1"


def test_user_guide_db_password_rotation(core, unique):
    """The user guide's manual rotation of a database password (凭据管家, 轮转), its calls as shown:
    a random password, the new version under a pending label, then ACSCurrent moved to it with
    MoveToVersion alone – the old current becomes ACSPrevious."""
    name = "db_cred-" + unique
    core("CreateSecret", SecretName=name, VersionId="v1", SecretData='{"uname": "alice", "pwd": "old"}')
    password = core("GetRandomPassword", ExcludePunctuation="true")["RandomPassword"]
    assert len(password) == 32 and password.isalnum()
    core("PutSecretValue", SecretName=name, SecretData='{"uname": "alice", "pwd": "%s"}' % password,
         VersionId="v2", VersionStages='["MyPendingLabel"]')
    assert json.loads(core("GetSecretValue", SecretName=name)["SecretData"])["pwd"] == "old"
    core("UpdateSecretVersionStage", SecretName=name, VersionStage="ACSCurrent", MoveToVersion="v2")
    current = core("GetSecretValue", SecretName=name)
    assert current["VersionId"] == "v2" and json.loads(current["SecretData"])["pwd"] == password
    ids = core("ListSecretVersionIds", SecretName=name)
    stages = {v["VersionId"]: sorted(v["VersionStages"]["VersionStage"]) for v in ids["VersionIds"]["VersionId"]}
    assert stages == {"v1": ["ACSPrevious"], "v2": ["ACSCurrent", "MyPendingLabel"]}


def test_secret_lifecycle_with_py_core(core, unique):
    name = "core-" + unique
    created = core("CreateSecret", SecretName=name, SecretData="first", VersionId="v1", Description="d",
                   Tags='[{"TagKey":"env","TagValue":"dev"}]')
    assert created["Arn"].endswith(":secret/" + name) and created["VersionId"] == "v1"
    got = core("GetSecretValue", SecretName=name, VersionStage="ACSCurrent", FetchExtendedConfig=True)
    assert got["SecretData"] == "first" and got["VersionStages"]["VersionStage"] == ["ACSCurrent"]
    put = core("PutSecretValue", SecretName=name, VersionId="v2", SecretData="second", VersionStages='["ACSCurrent","Blue"]')
    assert sorted(put["VersionStages"]["VersionStage"]) == ["ACSCurrent", "Blue"]
    core("UpdateSecretVersionStage", SecretName=name, VersionStage="Blue", RemoveFromVersion="v2", MoveToVersion="v1")
    ids = core("ListSecretVersionIds", SecretName=name, IncludeDeprecated="true")
    stages = {v["VersionId"]: sorted(v["VersionStages"]["VersionStage"]) for v in ids["VersionIds"]["VersionId"]}
    assert stages == {"v1": ["ACSPrevious", "Blue"], "v2": ["ACSCurrent"]}
    assert isinstance(ids["TotalCount"], int)
    core("UpdateSecret", SecretName=name, Description="new", **{"ExtendedConfig.CustomData": '{"k":"v"}'})
    d = core("DescribeSecret", SecretName=name, FetchTags="true")
    assert d["Description"] == "new" and json.loads(d["ExtendedConfig"]) == {"CustomData": {"k": "v"}}
    assert d["Tags"]["Tag"] == [{"TagKey": "env", "TagValue": "dev"}]
    listed = core("ListSecrets", Filters='[{"Key":"SecretName","Values":["%s"]}]' % name, FetchTags="true")
    assert [s["SecretName"] for s in listed["SecretList"]["Secret"]] == [name]
    deleted = core("DeleteSecret", SecretName=name, RecoveryWindowInDays="7")
    assert deleted["PlannedDeleteTime"].endswith("Z")
    with pytest.raises(ServerException) as e:
        core("GetSecretValue", SecretName=name)
    assert (e.value.get_http_status(), e.value.get_error_code()) == (409, "Rejected.ResourceInDeleteWindow")
    core("RestoreSecret", SecretName=name)
    assert core("GetSecretValue", SecretName=name)["SecretData"] == "second"
    with pytest.raises(ServerException) as e:
        core("CreateSecret", SecretName=name, SecretData="x", VersionId="v1")
    assert (e.value.get_http_status(), e.value.get_error_code()) == (409, "Rejected.ResourceExist")
    with pytest.raises(ServerException) as e:
        core("PutSecretValue", SecretName=name, VersionId="v1", SecretData="different")
    assert e.value.get_error_code() == "Rejected.ResourceExist"
    with pytest.raises(ServerException) as e:
        core("GetSecretValue", SecretName="no-such-" + unique)
    assert (e.value.get_http_status(), e.value.get_error_code()) == (404, "Forbidden.ResourceNotFound")
    core("DeleteSecret", SecretName=name, ForceDeleteWithoutRecovery="true")


def test_secrets_and_tags_with_py_tea(tea, unique):
    name = "tea-" + unique
    tea.create_secret(models.CreateSecretRequest(secret_name=name, secret_data="QUJD", secret_data_type="binary",
                                                 version_id="v1", tags='[{"TagKey":"team","TagValue":"core"}]'))
    v = tea.get_secret_value(models.GetSecretValueRequest(secret_name=name)).body
    assert (v.secret_data, v.secret_data_type) == ("QUJD", "binary")
    # py-tea flattens ExtendedConfig into ExtendedConfig.CustomData.<k>.
    tea.update_secret(models.UpdateSecretRequest(secret_name=name, extended_config=models.UpdateSecretRequestExtendedConfig(
        custom_data={"rotation": "manual"})))
    d = tea.describe_secret(models.DescribeSecretRequest(secret_name=name, fetch_tags="true")).body
    assert json.loads(d.extended_config) == {"CustomData": {"rotation": "manual"}}
    assert d.tags.tag[0].tag_key == "team"
    batch = tea.batch_get_secret_value(models.BatchGetSecretValueRequest(secrets_list=[
        models.BatchGetSecretValueRequestSecretsList(secret_name=name),
        models.BatchGetSecretValueRequestSecretsList(secret_name="missing-" + unique)])).body
    assert [s.secret_name for s in batch.secret_values] == [name]
    assert batch.errors[0].code == "Forbidden.ResourceNotFound" and batch.errors[0].http_status == 404

    key = tea.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
    tea.tag_resources(models.TagResourcesRequest(region_id="cn-hangzhou", resource_type="key", resource_id=[key],
                                                 tag=[models.TagResourcesRequestTag(key="env", value="prod"),
                                                      models.TagResourcesRequestTag(key="cost", value="42")]))
    listed = tea.list_tag_resources(models.ListTagResourcesRequest(region_id="cn-hangzhou", resource_type="key",
                                                                   resource_id=[key])).body
    assert sorted((t.tag_key, t.tag_value) for t in listed.tag_resources.tag_resource) == [("cost", "42"), ("env", "prod")]
    tea.untag_resources(models.UntagResourcesRequest(region_id="cn-hangzhou", resource_type="key", resource_id=[key],
                                                     tag_key=["cost"]))
    tags = tea.list_resource_tags(models.ListResourceTagsRequest(key_id=key)).body.tags.tag
    assert [(t.tag_key, t.key_id) for t in tags] == [("env", key)]
    tea.tag_resource(models.TagResourceRequest(key_id=key, tags='[{"TagKey":"a","TagValue":"b"}]'))
    tea.untag_resource(models.UntagResourceRequest(key_id=key, tag_keys='["a"]'))
    with pytest.raises(ClientException) as e:
        tea.tag_resource(models.TagResourceRequest(key_id=key, tags='[{"TagKey":"acs:reserved","TagValue":"b"}]'))
    assert e.value.code == "InvalidParameter"
    with pytest.raises(ClientException) as e:
        tea.list_secrets(models.ListSecretsRequest(filters="not json"))
    assert e.value.code == "InvalidParameter"


def test_random_passwords(tea):
    p = tea.get_random_password(models.GetRandomPasswordRequest(password_length="40")).body.random_password
    assert len(p) == 40
    assert any(c in string.ascii_lowercase for c in p) and any(c in string.ascii_uppercase for c in p)
    assert any(c in string.digits for c in p) and any(c in string.punctuation for c in p)
    p = tea.get_random_password(models.GetRandomPasswordRequest(
        exclude_punctuation="true", exclude_characters="aeiouAEIOU01")).body.random_password
    assert len(p) == 32 and not set(p) & set("aeiouAEIOU01" + string.punctuation)
    with pytest.raises(ClientException) as e:
        tea.get_random_password(models.GetRandomPasswordRequest(password_length="7"))
    assert (e.value.status_code, e.value.code) == (400, "InvalidParameter")


def test_a_disabled_cmk_blocks_the_secret(tea, unique):
    key = tea.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
    name = "guarded-" + unique
    tea.create_secret(models.CreateSecretRequest(secret_name=name, secret_data="x", version_id="v1", encryption_key_id=key))
    tea.disable_key(models.DisableKeyRequest(key_id=key))
    with pytest.raises(ClientException) as e:
        tea.get_secret_value(models.GetSecretValueRequest(secret_name=name))
    assert (e.value.status_code, e.value.code) == (409, "Rejected.Disabled")
    tea.enable_key(models.EnableKeyRequest(key_id=key))
    assert tea.get_secret_value(models.GetSecretValueRequest(secret_name=name)).body.secret_data == "x"
