//! The one error type of the engine: an Alibaba KMS error code, its HTTP status and a message.
//!
//! Codes and statuses follow `docs/ALIBABA-KMS-API.md` §3 and §6. Messages start with the
//! documented text and add what the caller needs to fix the request (a parameter name, a key id),
//! never key material or plaintext.

use std::fmt;

/// Every error code the engine can return. `code()` is the wire string, `http_status()` the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InternalFailure,
    ServiceUnavailableTemporary,
    KeyNotFound,
    KeyVersionNotFound,
    AliasNotFound,
    NoPermission,
    MissingParameter,
    InvalidParameter,
    LimitExceeded,
    AliasAlreadyExists,
    InvalidKeyMaterial,
    InvalidImportToken,
    ExpiredImportToken,
    UnsupportedOrigin,
    UnsupportedAlias,
    UnsupportedProtectionLevel,
    UnsupportedOperation,
    StateModifiedFailed,
    Disabled,
    PendingDeletion,
    PendingImport,
    DryRunOperation,
    // Secrets Manager.
    ResourceNotFound,
    ResourceExist,
    ResourceInDeleteWindow,
    // Gateway-level codes (API.md §3, §6): authentication and request shape.
    InvalidAccessKeyIdNotFound,
    AccessKeyDisabled,
    SignatureDoesNotMatch,
    IncompleteSignature,
    InvalidTimeStampExpired,
    IllegalTimestamp,
    SignatureNonceUsed,
    InvalidActionNotFound,
    InvalidVersion,
    UnsupportedHttpMethod,
    // Connection-level refusals, in the same JSON shape (no documented gateway code exists).
    RequestTimeout,
    RequestUriTooLong,
    RequestHeaderFieldsTooLarge,
    /// Over the caller's request rate (the sidecar's per-principal throttling).
    Throttling,
}

impl ErrorCode {
    /// The `Code` string on the wire.
    pub fn code(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InternalFailure => "InternalFailure",
            ServiceUnavailableTemporary => "ServiceUnavailableTemporary",
            RequestTimeout => "RequestTimeout",
            RequestUriTooLong => "RequestURITooLong",
            RequestHeaderFieldsTooLarge => "RequestHeaderFieldsTooLarge",
            Throttling => "Rejected.Throttling",
            KeyNotFound => "Forbidden.KeyNotFound",
            KeyVersionNotFound => "Forbidden.KeyVersionNotFound",
            AliasNotFound => "Forbidden.AliasNotFound",
            NoPermission => "Forbidden.NoPermission",
            MissingParameter => "MissingParameter",
            InvalidParameter => "InvalidParameter",
            LimitExceeded => "Rejected.LimitExceeded",
            AliasAlreadyExists => "AliasAlreadyExists",
            InvalidKeyMaterial => "InvalidKeyMaterial",
            InvalidImportToken => "InvalidImportToken",
            ExpiredImportToken => "ExpiredImportToken",
            UnsupportedOrigin => "Unsupported.Origin",
            UnsupportedAlias => "Unsupported.Alias",
            UnsupportedProtectionLevel => "Unsupported.ProtectionLevel",
            UnsupportedOperation => "Rejected.UnsupportedOperation",
            StateModifiedFailed => "Rejected.StateModifiedFailed",
            Disabled => "Rejected.Disabled",
            PendingDeletion => "Rejected.PendingDeletion",
            PendingImport => "Rejected.PendingImport",
            DryRunOperation => "DryRunOperationError",
            ResourceNotFound => "Forbidden.ResourceNotFound",
            ResourceExist => "Rejected.ResourceExist",
            ResourceInDeleteWindow => "Rejected.ResourceInDeleteWindow",
            InvalidAccessKeyIdNotFound => "InvalidAccessKeyId.NotFound",
            AccessKeyDisabled => "Forbidden.AccessKey",
            SignatureDoesNotMatch => "SignatureDoesNotMatch",
            IncompleteSignature => "IncompleteSignature",
            InvalidTimeStampExpired => "InvalidTimeStamp.Expired",
            IllegalTimestamp => "IllegalTimestamp",
            SignatureNonceUsed => "SignatureNonceUsed",
            InvalidActionNotFound => "InvalidAction.NotFound",
            InvalidVersion => "InvalidVersion",
            UnsupportedHttpMethod => "UnsupportedHTTPMethod",
        }
    }

    /// The HTTP status the gateway answers with.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InternalFailure => 500,
            ServiceUnavailableTemporary => 503,
            RequestTimeout => 408,
            RequestUriTooLong => 414,
            RequestHeaderFieldsTooLarge => 431,
            Throttling => 429,
            KeyNotFound
            | KeyVersionNotFound
            | AliasNotFound
            | ResourceNotFound
            | InvalidAccessKeyIdNotFound
            | InvalidActionNotFound => 404,
            NoPermission | AccessKeyDisabled | UnsupportedHttpMethod => 403,
            StateModifiedFailed
            | Disabled
            | PendingDeletion
            | PendingImport
            | ResourceExist
            | ResourceInDeleteWindow => 409,
            MissingParameter
            | InvalidParameter
            | LimitExceeded
            | AliasAlreadyExists
            | InvalidKeyMaterial
            | InvalidImportToken
            | ExpiredImportToken
            | UnsupportedOrigin
            | UnsupportedAlias
            | UnsupportedProtectionLevel
            | UnsupportedOperation
            | DryRunOperation
            | SignatureDoesNotMatch
            | IncompleteSignature
            | InvalidTimeStampExpired
            | IllegalTimestamp
            | SignatureNonceUsed
            | InvalidVersion => 400,
        }
    }

    /// The documented message that starts every error of this code.
    pub fn base_message(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InternalFailure => "Internal Failure.",
            ServiceUnavailableTemporary => "Service Unavailable Temporary.",
            RequestTimeout => "The request was not received in time.",
            RequestUriTooLong => "The request URI is too long.",
            RequestHeaderFieldsTooLarge => "The request headers are too large.",
            Throttling => "The QPS upper limit is exceeded.",
            KeyNotFound => "The specified Key is not found.",
            KeyVersionNotFound => "The specified Key version is not found.",
            AliasNotFound => "The specified Alias is not found.",
            NoPermission => "This operation is forbidden by permission system.",
            MissingParameter => "The parameter is needed but not provided.",
            InvalidParameter => "The specified parameter is not valid.",
            LimitExceeded => "The request was rejected because user create resource limit was exceeded.",
            AliasAlreadyExists => "AliasName Already Exists.",
            InvalidKeyMaterial => "key material is invalid.",
            InvalidImportToken => "import token is invalid.",
            ExpiredImportToken => "import token is expired.",
            UnsupportedOrigin => "This key origin is not valid for this api.",
            UnsupportedAlias => "Alias is not valid for this api.",
            UnsupportedProtectionLevel => "This protection level is not valid for this region.",
            UnsupportedOperation => "Unsupported operation.",
            StateModifiedFailed => "Keystate modified failed.",
            Disabled => "The request was rejected because the key state is Disabled.",
            PendingDeletion => "The request was rejected because the key state is PendingDeletion.",
            PendingImport => "The request was rejected because the key state is PendingImport.",
            DryRunOperation => "The request would have succeeded, but the DryRun flag is set.",
            ResourceNotFound => "The resource is not found.",
            ResourceExist => "The resource already exists.",
            ResourceInDeleteWindow => "The secret is planned to be deleted.",
            InvalidAccessKeyIdNotFound => "Specified access key is not found.",
            AccessKeyDisabled => "This AccessKey is not enabled.",
            SignatureDoesNotMatch => "Specified signature is not matched with our calculation.",
            IncompleteSignature => "The request signature does not conform to Alibaba Cloud standards.",
            InvalidTimeStampExpired => "Specified time stamp or date value is expired.",
            IllegalTimestamp => {
                "The input parameter \"Timestamp\" that is mandatory for processing this request is not supplied."
            }
            SignatureNonceUsed => "Specified signature nonce was used already.",
            InvalidActionNotFound => "Specified api is not found, please check your url and method.",
            InvalidVersion => "Specified parameter Version is not valid.",
            UnsupportedHttpMethod => "This http method is not supported.",
        }
    }
}

/// An engine error: a code and a message for the caller.
#[derive(Clone, PartialEq, Eq)]
pub struct KmsError {
    code: ErrorCode,
    message: String,
    /// How long a throttled caller should wait, in milliseconds (`x-acs-retry-after`).
    retry_after_ms: Option<u64>,
}

pub type Result<T, E = KmsError> = std::result::Result<T, E>;

impl KmsError {
    /// An error with the code's documented message.
    pub fn new(code: ErrorCode) -> Self {
        KmsError { code, message: code.base_message().to_string(), retry_after_ms: None }
    }

    /// An error with the documented message followed by `detail`.
    pub fn with_detail(code: ErrorCode, detail: impl fmt::Display) -> Self {
        KmsError { code, message: format!("{} {}", code.base_message(), detail), retry_after_ms: None }
    }

    /// An error with exactly this message (for messages whose form clients parse).
    pub fn from_parts(code: ErrorCode, message: String) -> Self {
        KmsError { code, message, retry_after_ms: None }
    }

    /// Rejected.Throttling (429), with how long to wait before trying again.
    pub fn throttled(retry_after_ms: u64, detail: impl fmt::Display) -> Self {
        KmsError { retry_after_ms: Some(retry_after_ms.max(1)), ..Self::with_detail(ErrorCode::Throttling, detail) }
    }

    /// For a throttled request: how long to wait, in milliseconds.
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.retry_after_ms
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }

    /// `MissingParameter` in the gateway's wording, naming the parameter.
    pub fn missing(param: &str) -> Self {
        Self::from_parts(ErrorCode::MissingParameter, format!("The parameter \"{param}\" is needed but not provided."))
    }

    /// `InvalidParameter` naming the parameter and why it was refused.
    pub fn invalid(param: &str, why: impl fmt::Display) -> Self {
        Self::from_parts(
            ErrorCode::InvalidParameter,
            format!("The specified parameter \"{param}\" is not valid: {why}"),
        )
    }

    pub fn key_not_found(key_id: &str) -> Self {
        Self::with_detail(ErrorCode::KeyNotFound, format_args!("KeyId: {key_id}"))
    }

    pub fn version_not_found(key_id: &str, version_id: &str) -> Self {
        Self::with_detail(ErrorCode::KeyVersionNotFound, format_args!("KeyId: {key_id}, KeyVersionId: {version_id}"))
    }

    pub fn alias_not_found(alias: &str) -> Self {
        Self::with_detail(ErrorCode::AliasNotFound, format_args!("AliasName: {alias}"))
    }

    /// An internal failure; `what` is logged, the caller gets the documented message only.
    pub fn internal(what: impl fmt::Display) -> Self {
        tracing::error!(error = %what, "internal failure");
        Self::new(ErrorCode::InternalFailure)
    }

    pub fn unsupported(detail: impl fmt::Display) -> Self {
        Self::with_detail(ErrorCode::UnsupportedOperation, detail)
    }
}

impl fmt::Debug for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code.code(), self.http_status(), self.message)
    }
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.code(), self.message)
    }
}

impl std::error::Error for KmsError {}

impl From<rusqlite::Error> for KmsError {
    fn from(e: rusqlite::Error) -> Self {
        KmsError::internal(format_args!("store: {e}"))
    }
}
