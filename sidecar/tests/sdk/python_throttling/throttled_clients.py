"""Alibaba's Python clients against a throttled sidecar (run by sidecar/tests/throttling.rs):
py-tea raises ThrottlingException carrying the sidecar's retry-after. The secrets-manager client
goes through py-core, which turns every HTTP error into ServerException – and the client backs
off only on ClientException – so a direct read over the limit fails with Rejected.Throttling, while
its cache client keeps serving the value it has. Prints one JSON line of what it saw.

Environment: KMS_HTTP, KMS_AK, KMS_SK (a principal with secrets_per_second = 0.5,
crypto_per_second = 3), KMS_SECRET (a secret it may read).
"""
import json
import logging
import os
import time

from alibaba_cloud_secretsmanager_client.model.region_info import RegionInfo
from alibaba_cloud_secretsmanager_client.secret_manager_cache_client_builder import SecretManagerCacheClientBuilder
from alibaba_cloud_secretsmanager_client.service.default_secret_manager_client_builder import \
    DefaultSecretManagerClientBuilder
from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client
from alibabacloud_tea_openapi.exceptions import ThrottlingException
from alibabacloud_tea_openapi.models import Config

logging.disable(logging.CRITICAL)  # the clients log every refused call; the JSON line says what matters
http, ak, sk = os.environ["KMS_HTTP"], os.environ["KMS_AK"], os.environ["KMS_SK"]
tea = Client(Config(access_key_id=ak, access_key_secret=sk, region_id="cn-hangzhou", endpoint=http, protocol="http"))
key = tea.create_key(models.CreateKeyRequest()).body.key_metadata.key_id

# py-tea: a burst of Encrypts runs into the limit; the exception carries the wait.
seen = None
for _ in range(20):
    try:
        tea.encrypt(models.EncryptRequest(key_id=key, plaintext="eA=="))
    except ThrottlingException as e:
        seen = {"code": e.code, "status": e.status_code, "retry_after": e.retry_after}
        break

# The secrets-manager client, as the same principal (one read every two seconds).
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkkms.request.v20160120.GetSecretValueRequest import GetSecretValueRequest

kms = DefaultSecretManagerClientBuilder.standard().with_access_key(ak, sk) \
    .add_region_info(RegionInfo("cn-hangzhou", endpoint="http://" + http)).build()
name = os.environ["KMS_SECRET"]
req = GetSecretValueRequest()
req.set_SecretName(name)
direct = []
for _ in range(2):
    try:
        direct.append(json.loads(kms.get_secret_value(req))["SecretData"])
    except ServerException as e:
        direct.append(e.get_error_code())
time.sleep(2.1)
cache = SecretManagerCacheClientBuilder.new_cache_client_builder(kms).build()
cached = [cache.get_secret_info(name).secret_value]
cache.refresh_now(name)          # over the limit: refused, logged, and the value kept
cached.append(cache.get_secret_info(name).secret_value)
print(json.dumps({"tea": seen, "direct": direct, "cached": cached}))
