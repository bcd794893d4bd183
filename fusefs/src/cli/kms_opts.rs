//! How `kmsfs` reaches the KMS: as the OSS service principal (see `kms_sidecar::envelope`).

use kms_sidecar::envelope::{ConnectError, KeyService, KmsArgs};

use super::{Failure, EXIT_KMS_UNREACHABLE, EXIT_OTHER};

pub fn connect(args: &KmsArgs) -> Result<Box<dyn KeyService>, Failure> {
    args.connect("oss").map_err(|e| match e {
        ConnectError::Unreachable(_) => Failure::new(EXIT_KMS_UNREACHABLE, e),
        ConnectError::Store(_) => Failure::new(EXIT_OTHER, e),
    })
}
