// @alicloud/kms20160120 1.x (Tea over @alicloud/rpc-client, V1 signatures), unmodified.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { env, unique } from './common.mjs';

const require = createRequire(import.meta.url);
const Kms = require('@alicloud/kms20160120');
const { Config } = require('@alicloud/rpc-client');
const Client = Kms.default;

const client = (opts = {}) => new Client(new Config({
  accessKeyId: env.ak, accessKeySecret: opts.sk ?? env.sk, regionId: 'cn-hangzhou',
  endpoint: opts.https ? env.https : env.http, protocol: opts.https ? 'https' : 'http',
}));

async function rejects(promise) {
  try { await promise; } catch (e) { return e; }
  assert.fail('expected an error');
}

test('keys, aliases and envelope encryption', async () => {
  const c = client();
  const md = (await c.createKey(new Kms.CreateKeyRequest({ description: 'node tea', keySpec: 'Aliyun_AES_256' }))).keyMetadata;
  assert.equal(md.keyState, 'Enabled');
  const key = md.keyId;
  const d = (await c.describeKey(new Kms.DescribeKeyRequest({ keyId: key }))).keyMetadata;
  assert.equal(d.description, 'node tea');
  const list = await c.listKeys(new Kms.ListKeysRequest({ pageSize: 100 }));
  assert.equal(typeof list.totalCount, 'number');
  assert.ok(list.keys.key.some((k) => k.keyId === key));

  const ctx = { purpose: 'demo', env: 'dev' };
  const ct = await c.encrypt(new Kms.EncryptRequest({ keyId: key, plaintext: 'SGVsbG8gS01TIQ==', encryptionContext: ctx }));
  assert.equal(ct.keyVersionId, d.primaryKeyVersion);
  const pt = await c.decrypt(new Kms.DecryptRequest({ ciphertextBlob: ct.ciphertextBlob, encryptionContext: { env: 'dev', purpose: 'demo' } }));
  assert.equal(pt.plaintext, 'SGVsbG8gS01TIQ==');
  // The SDK flattens the map (EncryptionContext.env=dev…); the context must really be bound.
  const wrong = await rejects(c.decrypt(new Kms.DecryptRequest({ ciphertextBlob: ct.ciphertextBlob, encryptionContext: { env: 'prod', purpose: 'demo' } })));
  assert.equal(wrong.code, 'InvalidParameterError');
  await rejects(c.decrypt(new Kms.DecryptRequest({ ciphertextBlob: ct.ciphertextBlob })));
  const dk = await c.generateDataKey(new Kms.GenerateDataKeyRequest({ keyId: key, numberOfBytes: 32 }));
  assert.equal(Buffer.from(dk.plaintext, 'base64').length, 32);
  const wp = await c.generateDataKeyWithoutPlaintext(new Kms.GenerateDataKeyWithoutPlaintextRequest({ keyId: key, keySpec: 'AES_128' }));
  assert.equal(Buffer.from((await c.decrypt(new Kms.DecryptRequest({ ciphertextBlob: wp.ciphertextBlob }))).plaintext, 'base64').length, 16);

  const alias = `alias/node-tea-${unique()}`;
  await c.createAlias(new Kms.CreateAliasRequest({ aliasName: alias, keyId: key }));
  assert.equal((await c.listAliasesByKeyId(new Kms.ListAliasesByKeyIdRequest({ keyId: key }))).aliases.alias[0].aliasName, alias);
  assert.ok((await c.listAliases(new Kms.ListAliasesRequest({ pageSize: 100 }))).aliases.alias.some((a) => a.aliasName === alias));
  const other = (await c.createKey(new Kms.CreateKeyRequest({}))).keyMetadata.keyId;
  await c.updateAlias(new Kms.UpdateAliasRequest({ aliasName: alias, keyId: other }));
  assert.equal((await c.encrypt(new Kms.EncryptRequest({ keyId: alias, plaintext: 'aGk=' }))).keyId, other);
  await c.deleteAlias(new Kms.DeleteAliasRequest({ aliasName: alias }));

  await c.updateKeyDescription(new Kms.UpdateKeyDescriptionRequest({ keyId: key, description: "密钥 ✓ *()!' x" }));
  assert.equal((await c.describeKey(new Kms.DescribeKeyRequest({ keyId: key }))).keyMetadata.description, "密钥 ✓ *()!' x");
  await c.updateRotationPolicy(new Kms.UpdateRotationPolicyRequest({ keyId: key, enableAutomaticRotation: true, rotationInterval: '7d' }));
  assert.equal((await c.describeKey(new Kms.DescribeKeyRequest({ keyId: key }))).keyMetadata.rotationInterval, '604800s');
  const versions = await c.listKeyVersions(new Kms.ListKeyVersionsRequest({ keyId: key }));
  assert.equal(versions.totalCount, 1);
  const v = await c.describeKeyVersion(new Kms.DescribeKeyVersionRequest({ keyId: key, keyVersionId: versions.keyVersions.keyVersion[0].keyVersionId }));
  assert.equal(v.keyVersion.keyId, key);
  await c.disableKey(new Kms.DisableKeyRequest({ keyId: key }));
  await c.enableKey(new Kms.EnableKeyRequest({ keyId: key }));
  await c.scheduleKeyDeletion(new Kms.ScheduleKeyDeletionRequest({ keyId: key, pendingWindowInDays: 7 }));
  await c.cancelKeyDeletion(new Kms.CancelKeyDeletionRequest({ keyId: key }));
  const regions = await c.describeRegions(new Kms.DescribeRegionsRequest({}));
  assert.equal(regions.regions.region[0].regionId, 'cn-hangzhou');
});

test('errors carry the code (with the SDK\'s Error suffix) and status', async () => {
  const c = client();
  let e = await rejects(c.describeKey(new Kms.DescribeKeyRequest({ keyId: 'key-doesnotexist' })));
  assert.equal(e.code, 'Forbidden.KeyNotFoundError');
  assert.match(e.message, /code: 404/);
  const key = (await c.createKey(new Kms.CreateKeyRequest({}))).keyMetadata.keyId;
  await c.disableKey(new Kms.DisableKeyRequest({ keyId: key }));
  e = await rejects(c.encrypt(new Kms.EncryptRequest({ keyId: key, plaintext: 'aGk=' })));
  assert.equal(e.code, 'Rejected.DisabledError');
  assert.match(e.message, /code: 409/);
  e = await rejects(client({ sk: 'wrong' }).describeRegions(new Kms.DescribeRegionsRequest({})));
  assert.equal(e.code, 'SignatureDoesNotMatchError');
});

test('https with the generated CA (NODE_EXTRA_CA_CERTS)', async () => {
  const r = await client({ https: true }).describeRegions(new Kms.DescribeRegionsRequest({}));
  assert.equal(r.regions.region[0].regionId, 'cn-hangzhou');
});

test('asymmetric sign/verify: Value is a boolean, GetPublicKey is PEM', async () => {
  const c = client();
  const key = (await c.createKey(new Kms.CreateKeyRequest({ keySpec: 'EC_P256', keyUsage: 'SIGN/VERIFY' }))).keyMetadata.keyId;
  const version = (await c.listKeyVersions(new Kms.ListKeyVersionsRequest({ keyId: key }))).keyVersions.keyVersion[0].keyVersionId;
  const pem = (await c.getPublicKey(new Kms.GetPublicKeyRequest({ keyId: key, keyVersionId: version }))).publicKey;
  assert.match(pem, /^-----BEGIN PUBLIC KEY-----/);
  const digest = (await import('node:crypto')).createHash('sha256').update('node').digest('base64');
  const sig = (await c.asymmetricSign(new Kms.AsymmetricSignRequest({ keyId: key, keyVersionId: version, algorithm: 'ECDSA_SHA_256', digest }))).value;
  const ok = await c.asymmetricVerify(new Kms.AsymmetricVerifyRequest({ keyId: key, keyVersionId: version, algorithm: 'ECDSA_SHA_256', digest, value: sig }));
  assert.equal(ok.value, true);
  const crypto = await import('node:crypto');
  assert.ok(crypto.verify('sha256', Buffer.from('node'), pem, Buffer.from(sig, 'base64')), 'node:crypto verifies the KMS signature');
});
