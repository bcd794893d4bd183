// @alicloud/pop-core 1.8.0, unmodified: default GET (everything in the query) and POST (everything,
// Signature included, in a form body). pop-core decides errors by the presence of Code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { env, unique } from './common.mjs';

const require = createRequire(import.meta.url);
const RPCClient = require('@alicloud/pop-core').RPCClient;

const client = (opts = {}) => new RPCClient({
  accessKeyId: env.ak, accessKeySecret: opts.sk ?? env.sk,
  endpoint: opts.https ? `https://${env.https}` : `http://${env.http}`, apiVersion: '2016-01-20',
  opts: opts.https ? { ca: fs.readFileSync(env.ca) } : {},
});

for (const method of ['GET', 'POST']) {
  const call = (c, action, params = {}) => c.request(action, params, { method, formatParams: false });

  test(`${method}: keys, aliases and envelope encryption`, async () => {
    const c = client();
    const key = (await call(c, 'CreateKey', { Description: `pop ${method} ${unique()}`, KeySpec: 'Aliyun_SM4' })).KeyMetadata.KeyId;
    assert.ok(!('Code' in (await call(c, 'DescribeKey', { KeyId: key }))), 'success bodies carry no Code');
    const alias = `alias/pop-${method.toLowerCase()}-${unique()}`;
    await call(c, 'CreateAlias', { AliasName: alias, KeyId: key });
    const dk = await call(c, 'GenerateDataKey', { KeyId: alias, KeySpec: 'AES_256', NumberOfBytes: 32, EncryptionContext: '{"k":"v"}' });
    assert.equal(Buffer.from(dk.Plaintext, 'base64').length, 32);
    const back = await call(c, 'Decrypt', { CiphertextBlob: dk.CiphertextBlob, EncryptionContext: '{ "k" : "v" }' });
    assert.equal(back.Plaintext, dk.Plaintext);
    const ct = await call(c, 'Encrypt', { KeyId: key, Plaintext: Buffer.from('a b+c/d=e').toString('base64') });
    const re = await call(c, 'ReEncrypt', { CiphertextBlob: ct.CiphertextBlob, DestinationKeyId: alias });
    assert.equal(Buffer.from((await call(c, 'Decrypt', { CiphertextBlob: re.CiphertextBlob })).Plaintext, 'base64').toString(), 'a b+c/d=e');
    const list = await call(c, 'ListKeys', { PageSize: 5, PageNumber: 1 });
    assert.equal(list.PageSize, 5);
    assert.equal(typeof list.TotalCount, 'number');
    await call(c, 'DeleteAlias', { AliasName: alias });
  });

  test(`${method}: errors are recognised by their Code`, async () => {
    const c = client();
    await assert.rejects(call(c, 'DescribeKey', { KeyId: 'key-doesnotexist' }), (e) => {
      assert.equal(e.name, 'Forbidden.KeyNotFoundError');
      assert.equal(e.code, 'Forbidden.KeyNotFound');
      assert.equal(e.data.HostId !== undefined, true);
      return true;
    });
    await assert.rejects(call(c, 'NoSuchAction'), (e) => e.code === 'InvalidAction.NotFound');
    await assert.rejects(call(c, 'Encrypt', { KeyId: 'key-x' }), (e) => e.code === 'MissingParameter' && /Plaintext/.test(e.message));
    await assert.rejects(call(client({ sk: 'wrong' }), 'DescribeRegions'), (e) => e.code === 'SignatureDoesNotMatch');
  });
}

test('https with opts.ca', async () => {
  const r = await client({ https: true }).request('DescribeRegions', {}, { method: 'POST' });
  assert.equal(r.Regions.Region[0].RegionId, 'cn-hangzhou');
});
