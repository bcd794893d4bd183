//! How `kmsfs` reaches the KMS: as the OSS service principal (see `kms_client::envelope`).

use kms_client::envelope::{KeyService, KmsArgs};

use super::Failure;

pub fn connect(args: &KmsArgs) -> Result<Box<dyn KeyService>, Failure> {
    Ok(args.connect("oss")?)
}
