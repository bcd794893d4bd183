"""Shared fixtures: where the sidecar under test listens and which keys it accepts.

The Rust harness (sidecar/tests/sdk_compat.rs) starts the real kms-sidecar binary and passes:
KMS_HTTP (host:port), KMS_HTTPS (host:port), KMS_CA_FILE, KMS_ACCESS_KEY_ID / KMS_ACCESS_KEY_SECRET
(the owner), KMS_OSS_ACCESS_KEY_ID / KMS_OSS_ACCESS_KEY_SECRET (the OSS service principal), and,
when the sidecar is one node of several on a shared store, KMS_PEERS: the other nodes' host:port,
comma-separated (test_cross_node.py runs only then).
"""
import os
import uuid

import pytest


class Env:
    http = os.environ["KMS_HTTP"]
    https = os.environ["KMS_HTTPS"]
    ca = os.environ["KMS_CA_FILE"]
    ak = os.environ["KMS_ACCESS_KEY_ID"]
    sk = os.environ["KMS_ACCESS_KEY_SECRET"]
    oss_ak = os.environ["KMS_OSS_ACCESS_KEY_ID"]
    oss_sk = os.environ["KMS_OSS_ACCESS_KEY_SECRET"]
    peers = [p for p in os.environ.get("KMS_PEERS", "").split(",") if p]


@pytest.fixture(scope="session")
def env():
    return Env


@pytest.fixture
def unique():
    return uuid.uuid4().hex[:10]
