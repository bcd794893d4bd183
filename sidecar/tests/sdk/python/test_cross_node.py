"""One KMS behind several sidecars (a shared PostgreSQL store): what Alibaba's SDKs make through
this node works through every other node, unchanged - keys, aliases, envelope blobs, secrets and
their rotation, alias moves - and a key disabled here is refused everywhere within the store's lease (2 s).

Runs when the harness names peers (KMS_PEERS, see conftest.py); skipped otherwise."""
import os
import time

import pytest
from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.models import Config

LEASE_S = 2.0

pytestmark = pytest.mark.skipif(not os.environ.get("KMS_PEERS"), reason="no peer nodes (KMS_PEERS)")


def tea(env, endpoint):
    return Client(Config(access_key_id=env.ak, access_key_secret=env.sk, region_id="cn-hangzhou",
                         endpoint=endpoint, protocol="http"))


@pytest.fixture
def here(env):
    return tea(env, env.http)


@pytest.fixture
def peers(env):
    return [tea(env, p) for p in env.peers]


class Stale(ClientException):
    def __init__(self, what):
        super().__init__(code="Stale", message=what)


def eventually(f, within_s):
    """f() once it stops raising, failing after within_s seconds."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return f()
        except ClientException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_keys_aliases_and_blobs_cross_nodes(here, peers, unique):
    key = here.create_key(models.CreateKeyRequest(description="cross-node")).body.key_metadata.key_id
    alias = "alias/cross-" + unique
    here.create_alias(models.CreateAliasRequest(alias_name=alias, key_id=key))
    blob = here.encrypt(models.EncryptRequest(key_id=alias, plaintext="aGVsbG8=")).body.ciphertext_blob
    for peer in peers:
        # The blob names its key; the peer resolves it (and the alias) from the shared store.
        assert peer.decrypt(models.DecryptRequest(ciphertext_blob=blob)).body.plaintext == "aGVsbG8="
        theirs = eventually(lambda: peer.encrypt(models.EncryptRequest(key_id=alias, plaintext="d29ybGQ=")),
                            LEASE_S).body.ciphertext_blob
        assert here.decrypt(models.DecryptRequest(ciphertext_blob=theirs)).body.plaintext == "d29ybGQ="
        dk = peer.generate_data_key(models.GenerateDataKeyRequest(key_id=key, number_of_bytes=32)).body
        assert here.decrypt(models.DecryptRequest(ciphertext_blob=dk.ciphertext_blob)).body.plaintext == dk.plaintext
    # The alias re-pointed here: every peer encrypts under the new key within the lease.
    other = here.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
    here.update_alias(models.UpdateAliasRequest(alias_name=alias, key_id=other))

    def moved(c):
        if c.encrypt(models.EncryptRequest(key_id=alias, plaintext="aGk=")).body.key_id != other:
            raise Stale("the alias still names the old key")

    for peer in peers:
        eventually(lambda: moved(peer), LEASE_S)
        assert peer.decrypt(models.DecryptRequest(ciphertext_blob=blob)).body.plaintext == "aGVsbG8="


def test_a_key_disabled_here_is_refused_by_every_peer_within_the_lease(here, peers):
    key = here.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
    for peer in peers:
        peer.encrypt(models.EncryptRequest(key_id=key, plaintext="aGk="))
    here.disable_key(models.DisableKeyRequest(key_id=key))
    disabled_at = time.monotonic()
    for peer in peers:
        while True:
            try:
                peer.encrypt(models.EncryptRequest(key_id=key, plaintext="aGk="))
            except ClientException as e:
                assert e.code in ("Rejected.Disabled", "ServiceUnavailableTemporary"), e.code
                break
            assert time.monotonic() - disabled_at <= LEASE_S, "a peer served a disabled key after the lease"
    # Enabled again here: every peer serves it again.
    here.enable_key(models.EnableKeyRequest(key_id=key))
    for peer in peers:
        eventually(lambda: peer.encrypt(models.EncryptRequest(key_id=key, plaintext="aGk=")), LEASE_S)


def test_secret_versions_and_stages_cross_nodes(here, peers, unique):
    name = "cross/db-" + unique
    here.create_secret(models.CreateSecretRequest(secret_name=name, secret_data="v1-data", version_id="v1"))
    for peer in peers:
        got = peer.get_secret_value(models.GetSecretValueRequest(secret_name=name)).body
        assert (got.secret_data, got.version_id) == ("v1-data", "v1")
    # Rotated through a peer; read back here and on the others.
    peers[0].put_secret_value(models.PutSecretValueRequest(secret_name=name, version_id="v2", secret_data="v2-data"))

    def current(c):
        b = c.get_secret_value(models.GetSecretValueRequest(secret_name=name)).body
        if b.version_id != "v2":
            raise Stale("still " + b.version_id)
        return b

    for c in [here] + peers:
        assert eventually(lambda: current(c), LEASE_S).secret_data == "v2-data"
    prev = here.get_secret_value(models.GetSecretValueRequest(secret_name=name, version_stage="ACSPrevious")).body
    assert prev.version_id == "v1"
    here.delete_secret(models.DeleteSecretRequest(secret_name=name, force_delete_without_recovery="true"))
    for peer in peers:
        def gone():
            try:
                peer.get_secret_value(models.GetSecretValueRequest(secret_name=name))
            except ClientException as e:
                assert e.code == "Forbidden.ResourceNotFound", e.code
                return
            raise Stale("still readable")
        eventually(gone, LEASE_S)
