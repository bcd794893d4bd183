//! The two request-signing schemes (`docs/ALIBABA-KMS-API.md` §2), as pure functions used by the server to verify and
//! by the client to sign.
//!
//! V1 (RPC, `Signature` parameter): HMAC-SHA1 (or HMAC-SHA256) with key `secret + "&"` over
//! `METHOD&%2F&pct(sorted pct(k)=pct(v) joined by &)`, base64.
//! V3 (`Authorization: ACS3-HMAC-SHA256 …`): HMAC-SHA256 with key `secret` over
//! `"ACS3-HMAC-SHA256\n" + hex(SHA256(canonical request))`, hex.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub const V3_ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// RFC 3986 percent-encoding of UTF-8: unreserved `A-Z a-z 0-9 - _ . ~` kept, the rest `%XX`
/// with upper-case hex.
pub fn pct(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 16);
    pct_into(&mut out, s.as_bytes());
    String::from_utf8(out).expect("percent-encoding writes ASCII")
}

/// Which bytes RFC 3986 leaves unreserved, as a table: one load a byte on the hot path.
static UNRESERVED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~');
        b += 1;
    }
    t
};

fn unreserved(b: u8) -> bool {
    UNRESERVED[b as usize]
}

/// Appends the percent-encoding of `s` to `out` (runs of unreserved bytes are copied whole: the
/// signature of every request is computed over this, so it is on the hot path).
fn pct_into(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut run = 0;
    for (i, &b) in s.iter().enumerate() {
        if !unreserved(b) {
            out.extend_from_slice(&s[run..i]);
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            run = i + 1;
        }
    }
    out.extend_from_slice(&s[run..]);
}

/// The pairs percent-encoded into one buffer, sorted by encoded key (then value): the buffer and
/// each pair's `(start, end of key, end)` in it. One allocation for all of them, not two a pair.
fn encoded_sorted<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> (Vec<u8>, Vec<(usize, usize, usize)>) {
    let mut buf = Vec::with_capacity(512);
    let mut spans = Vec::with_capacity(16);
    for (k, v) in pairs {
        let start = buf.len();
        pct_into(&mut buf, k.as_bytes());
        let key_end = buf.len();
        pct_into(&mut buf, v.as_bytes());
        spans.push((start, key_end, buf.len()));
    }
    spans.sort_unstable_by(|a, b| (&buf[a.0..a.1], &buf[a.1..a.2]).cmp(&(&buf[b.0..b.1], &buf[b.1..b.2])));
    (buf, spans)
}

/// `pct(k)=pct(v)` pairs sorted by key (then value), joined by `&`.
pub fn canonical_query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let (buf, spans) = encoded_sorted(pairs);
    let mut out = Vec::with_capacity(buf.len() + 2 * spans.len());
    for (i, &(start, key_end, end)) in spans.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(&buf[start..key_end]);
        out.push(b'=');
        out.extend_from_slice(&buf[key_end..end]);
    }
    String::from_utf8(out).expect("percent-encoding writes ASCII")
}

/// The V1 string to sign over all parameters except `Signature`: `METHOD&%2F&` and the
/// canonical query percent-encoded once more (written straight from the sorted pairs: `&` is
/// `%26`, `=` is `%3D`).
pub fn v1_string_to_sign<'a>(method: &str, params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let (buf, spans) = encoded_sorted(params.into_iter().filter(|(k, _)| *k != "Signature"));
    let mut out = Vec::with_capacity(method.len() + 4 + buf.len() * 5 / 4 + 6 * spans.len());
    out.extend(method.bytes().map(|b| b.to_ascii_uppercase()));
    out.extend_from_slice(b"&%2F&");
    for (i, &(start, key_end, end)) in spans.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b"%26");
        }
        pct_into(&mut out, &buf[start..key_end]);
        out.extend_from_slice(b"%3D");
        pct_into(&mut out, &buf[key_end..end]);
    }
    String::from_utf8(out).expect("percent-encoding writes ASCII")
}

/// V1 signature methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Method {
    HmacSha1,
    HmacSha256,
}

impl V1Method {
    /// Case-insensitively (every signed request names one; no copy made to compare).
    pub fn parse(s: &str) -> Option<Self> {
        [V1Method::HmacSha1, V1Method::HmacSha256].into_iter().find(|m| m.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            V1Method::HmacSha1 => "HMAC-SHA1",
            V1Method::HmacSha256 => "HMAC-SHA256",
        }
    }
}

/// base64(HMAC(secret + "&", string_to_sign)).
pub fn v1_signature(method: V1Method, secret: &str, string_to_sign: &str) -> String {
    let key = zeroize::Zeroizing::new(format!("{secret}&"));
    let mac = match method {
        V1Method::HmacSha1 => {
            let mut m = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).expect("any key length");
            m.update(string_to_sign.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        V1Method::HmacSha256 => {
            let mut m = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
            m.update(string_to_sign.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
    };
    B64.encode(mac)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The V3 canonical request. `headers` are `(lower-case name, value)` as received; each signed
/// header contributes `name:trimmed values joined by ','`.
pub fn v3_canonical_request<'a>(
    method: &str,
    path: &str,
    query_pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    headers: &[(impl AsRef<str>, impl AsRef<str>)],
    signed_headers: &str,
    payload_hash: &str,
) -> String {
    let mut canonical_headers = String::new();
    for name in signed_headers.split(';').filter(|n| !n.is_empty()) {
        let mut values: Vec<&str> =
            headers.iter().filter(|(n, _)| n.as_ref() == name).map(|(_, v)| v.as_ref().trim()).collect();
        values.sort();
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }
    let uri = if path.is_empty() { "/" } else { path };
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        uri,
        canonical_query(query_pairs),
        canonical_headers,
        signed_headers,
        payload_hash
    )
}

pub fn v3_string_to_sign(canonical_request: &str) -> String {
    format!("{V3_ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()))
}

/// hex(HMAC-SHA256(secret, string_to_sign)).
pub fn v3_signature(secret: &str, string_to_sign: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(string_to_sign.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// The parts of an `Authorization: ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Authorization {
    pub algorithm: String,
    pub credential: String,
    pub signed_headers: String,
    pub signature: String,
}

impl V3Authorization {
    pub fn parse(value: &str) -> Option<Self> {
        let (algorithm, rest) = value.trim().split_once(' ')?;
        let mut a = V3Authorization {
            algorithm: algorithm.to_string(),
            credential: String::new(),
            signed_headers: String::new(),
            signature: String::new(),
        };
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            match k {
                "Credential" => a.credential = v.to_string(),
                "SignedHeaders" => a.signed_headers = v.to_string(),
                "Signature" => a.signature = v.to_string(),
                _ => {}
            }
        }
        (!a.credential.is_empty() && !a.signature.is_empty()).then_some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_methods_parse_case_insensitively() {
        assert_eq!(V1Method::parse("HMAC-SHA1"), Some(V1Method::HmacSha1));
        assert_eq!(V1Method::parse("hmac-sha256"), Some(V1Method::HmacSha256));
        assert_eq!(V1Method::parse("Hmac-Sha1"), Some(V1Method::HmacSha1));
        assert_eq!(V1Method::parse("HMAC-SHA1 "), None);
        assert_eq!(V1Method::parse("HMAC-MD5"), None);
        assert_eq!(V1Method::parse(""), None);
    }

    #[test]
    fn pct_is_rfc3986() {
        assert_eq!(pct("a b*~/+=密"), "a%20b%2A~%2F%2B%3D%E5%AF%86");
        assert_eq!(pct(""), "");
        assert_eq!(pct("%"), "%25");
        assert_eq!(pct("AZaz09-_.~"), "AZaz09-_.~");
    }

    /// The one-buffer canonicalisation is the specification's: encode each key and value, sort
    /// the encoded pairs (key, then value), join with `=` and `&`, encode the whole once more.
    #[test]
    fn string_to_sign_matches_the_plain_construction() {
        fn plain_canonical<'a>(pairs: impl Iterator<Item = &'a (&'a str, &'a str)>) -> String {
            let mut v: Vec<(String, String)> = pairs.map(|(k, v)| (pct(k), pct(v))).collect();
            v.sort();
            v.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
        }
        fn plain(method: &str, pairs: &[(&str, &str)]) -> String {
            let canon = plain_canonical(pairs.iter().filter(|(k, _)| *k != "Signature"));
            format!("{method}&{}&{}", pct("/"), pct(&canon))
        }
        let pairs = [
            ("b", "2"),
            ("a", "x y"),
            ("A", "+/="),
            ("a", "w"),
            ("Signature", "ignored"),
            ("密钥", "值"),
            ("a.b", "~%"),
            ("", ""),
            ("a%", "1"),
        ];
        assert_eq!(v1_string_to_sign("post", pairs), plain("POST", &pairs));
        assert_eq!(canonical_query(pairs), plain_canonical(pairs.iter()));
    }

    /// Worked example 1 (official doc, GET CreateKey).
    #[test]
    fn v1_doc_example() {
        let p = [
            ("AccessKeyId", "testid"),
            ("Action", "CreateKey"),
            ("Format", "json"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2016-03-28T03:13:08Z"),
            ("Version", "2016-01-20"),
        ];
        let sts = v1_string_to_sign("GET", p);
        assert_eq!(sts, "GET&%2F&AccessKeyId%3Dtestid%26Action%3DCreateKey%26Format%3Djson%26SignatureMethod%3DHMAC-SHA1%26SignatureVersion%3D1.0%26Timestamp%3D2016-03-28T03%253A13%253A08Z%26Version%3D2016-01-20");
        assert_eq!(v1_signature(V1Method::HmacSha1, "testsecret", &sts), "41wk2SSX1GJh7fwnc5eqOfiJPFg=");
    }

    /// Worked example 3 (captured py-tea CreateSecret, V3 with a form body).
    #[test]
    fn v3_captured_example() {
        let headers: Vec<(String, String)> = [
            ("accept", "application/json"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("host", "127.0.0.1:18080"),
            ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
            ("x-acs-action", "CreateSecret"),
            ("x-acs-content-sha256", "4b7753b9e2a2f581438e99b10fbc144bba834febf492d3d5e0e5271900d4ffc2"),
            ("x-acs-credentials-provider", "static_ak"),
            ("x-acs-date", "2026-11-22T09:23:44Z"),
            ("x-acs-signature-nonce", "0419b8419c954376852e14bd6d82dc5e"),
            ("x-acs-version", "2016-01-20"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let body = b"SecretData=%7B%22user%22%3A%22admin%22%2C%22password%22%3A%22p%40ss+w%2Brd%22%7D";
        assert_eq!(sha256_hex(body), "4b7753b9e2a2f581438e99b10fbc144bba834febf492d3d5e0e5271900d4ffc2");
        let query = "EnableAutomaticRotation=False&SecretDataType=text&SecretName=demo-secret&Tags=%5B%7B%22TagKey%22%3A%22env%22%2C%22TagValue%22%3A%22dev%22%7D%5D&VersionId=v1";
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let cr = v3_canonical_request(
            "POST",
            "/",
            pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())),
            &headers,
            "accept;content-type;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version",
            &sha256_hex(body),
        );
        let sts = v3_string_to_sign(&cr);
        assert_eq!(sts, "ACS3-HMAC-SHA256\n3a349bd3144f79d3f19447780d4e77b3144477ce1ddc01d967954c73af6ca320");
        assert_eq!(
            v3_signature("testAccessKeySecret", &sts),
            "815654b5d395c47ad1784af64e6f435a6560d3213e75632b40a1d9dbdc4f6114"
        );
    }

    #[test]
    fn authorization_header_parses() {
        let a = V3Authorization::parse("ACS3-HMAC-SHA256 Credential=ak,SignedHeaders=host;x-acs-date,Signature=abc")
            .unwrap();
        assert_eq!(
            (a.algorithm.as_str(), a.credential.as_str(), a.signed_headers.as_str()),
            (V3_ALGORITHM, "ak", "host;x-acs-date")
        );
        assert!(V3Authorization::parse("ACS3-HMAC-SHA256 Signature=abc").is_none());
    }
}
