//! Response bodies: PascalCase JSON with a `RequestId` on success; on error the gateway's
//! `{RequestId, HostId, Code, Message, Recommend}` with the code's HTTP status (`docs/ALIBABA-KMS-API.md` §3).

use kms_core::KmsError;

pub const CONTENT_TYPE: &str = "application/json;charset=utf-8";

/// A new request id in the service's shape (an upper-case random UUID). From the thread-local
/// CSPRNG: ids must be unique, not secret, and a syscall per request is measurable.
pub fn new_request_id() -> String {
    use rand::Rng;
    let bits: u128 = rand::thread_rng().gen();
    let u = uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    u.hyphenated().encode_upper(&mut buf).to_string()
}

/// A serialised JSON object (`{}` for actions that return nothing) with `RequestId` spliced in
/// before its closing brace: one serialisation per response, no intermediate tree.
pub fn success_body(request_id: &str, mut object: Vec<u8>) -> Vec<u8> {
    debug_assert!(object.first() == Some(&b'{') && object.last() == Some(&b'}'));
    object.pop();
    if object.len() > 1 {
        object.push(b',');
    }
    object.extend_from_slice(b"\"RequestId\":\"");
    object.extend_from_slice(request_id.as_bytes());
    object.extend_from_slice(b"\"}");
    object
}

/// Serialises a response object.
pub fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("response types serialise")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_is_spliced_into_the_object() {
        assert_eq!(success_body("R", b"{}".to_vec()), br#"{"RequestId":"R"}"#);
        let b = success_body("R", br#"{"KeyId":"k","Keys":{"Key":[]}}"#.to_vec());
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!((v["KeyId"].as_str(), v["RequestId"].as_str()), (Some("k"), Some("R")));
        let id = new_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id, id.to_uppercase());
        assert_ne!(id, new_request_id());
    }
}
