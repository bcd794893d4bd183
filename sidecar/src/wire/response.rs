//! Response bodies: PascalCase JSON with a `RequestId` on success; on error the gateway's
//! `{RequestId, HostId, Code, Message, Recommend}` with the code's HTTP status (spec §5).

use kms_core::KmsError;
use serde_json::{Map, Value};

pub const CONTENT_TYPE: &str = "application/json;charset=utf-8";

/// A new request id in the service's shape (an upper-case UUID).
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

/// `value` (a JSON object, or null for actions that return nothing) with `RequestId` added.
pub fn success_body(request_id: &str, value: Value) -> Vec<u8> {
    let mut obj = match value {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    obj.insert("RequestId".into(), Value::String(request_id.to_string()));
    serde_json::to_vec(&obj).expect("a JSON map serialises")
}

pub fn error_body(request_id: &str, host_id: &str, e: &KmsError) -> Vec<u8> {
    let code = e.code().code();
    let body = serde_json::json!({
        "RequestId": request_id,
        "HostId": host_id,
        "Code": code,
        "Message": e.message(),
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={code}&product=Kms&requestId={request_id}"),
    });
    serde_json::to_vec(&body).expect("JSON serialises")
}
