// Where the sidecar under test listens (set by sidecar/tests/sdk_compat.rs).
export const env = {
  http: process.env.KMS_HTTP,
  https: process.env.KMS_HTTPS,
  ca: process.env.KMS_CA_FILE,
  ak: process.env.KMS_ACCESS_KEY_ID,
  sk: process.env.KMS_ACCESS_KEY_SECRET,
};
export const unique = () => Math.random().toString(36).slice(2, 10);
