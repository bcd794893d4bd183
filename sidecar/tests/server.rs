//! The server against bad and hostile requests, over real sockets: every failure has the
//! gateway's code and status, the documented body shape, and changes nothing.

use std::io::{Read, Write};
use std::sync::Arc;

use kms_client::client::{Client, ClientConfig, Signing};
use kms_core::api::*;
use kms_sidecar::app::{self, Running};
use kms_sidecar::auth::sign;
use kms_sidecar::config::{AccessKeyConfig, Config};
use serde_json::Value;
use zeroize::Zeroizing;

const AK: &str = "testAccessKeyId";
const SK: &str = "testAccessKeySecret";

struct Server {
    rt: tokio::runtime::Runtime,
    running: Option<Running>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Self::start_with(|_| {})
    }

    fn start_with(tweak: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config {
            data_dir: Some(dir.path().to_path_buf()),
            listen: "127.0.0.1:0".into(),
            tls_listen: Some("127.0.0.1:0".into()),
            unix_socket: Some(dir.path().join("kms.sock")),
            access_keys: vec![
                AccessKeyConfig { id: AK.into(), secret: SK.into(), principal: "owner".into(), enabled: true },
                AccessKeyConfig {
                    id: "disabledKey".into(),
                    secret: "x".into(),
                    principal: "owner".into(),
                    enabled: false,
                },
            ],
            ..Default::default()
        };
        cfg.max_body_bytes = 64 * 1024;
        tweak(&mut cfg);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let running = rt.block_on(app::start(cfg)).unwrap();
        Server { rt, running: Some(running), _dir: dir }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    fn url(&self) -> String {
        format!("http://{}/", self.running().http.unwrap())
    }

    fn client(&self, signing: Signing, https: bool) -> Client {
        let r = self.running();
        Client::new(ClientConfig {
            endpoint: if https {
                format!("https://localhost:{}", r.https.unwrap().port())
            } else {
                format!("http://{}", r.http.unwrap())
            },
            access_key_id: AK.into(),
            access_key_secret: Zeroizing::new(SK.into()),
            ca_file: r.profile.ca_file.clone(),
            signing,
            timeout: std::time::Duration::from_secs(10),
        })
        .unwrap()
    }

    /// Stops the server; hands back its data dir, which outlives it.
    fn shutdown(mut self) -> tempfile::TempDir {
        let r = self.running.take().unwrap();
        self.rt.block_on(r.shutdown());
        self._dir
    }
}

fn now_iso() -> String {
    kms_core::clock::format_iso(time::OffsetDateTime::now_utc().unix_timestamp())
}

/// A V1-signed parameter list for `action`, after `tweak` has edited the common parameters.
fn v1_params(
    action: &str,
    extra: &[(&str, &str)],
    secret: &str,
    tweak: impl FnOnce(&mut Vec<(String, String)>),
) -> Vec<(String, String)> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let mut p: Vec<(String, String)> = vec![
        ("Action".into(), action.into()),
        ("Version".into(), "2016-01-20".into()),
        ("Format".into(), "JSON".into()),
        ("AccessKeyId".into(), AK.into()),
        ("SignatureMethod".into(), "HMAC-SHA1".into()),
        ("SignatureVersion".into(), "1.0".into()),
        ("SignatureNonce".into(), nonce),
        ("Timestamp".into(), now_iso()),
    ];
    p.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    tweak(&mut p);
    let sts = sign::v1_string_to_sign("POST", p.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    p.push(("Signature".into(), sign::v1_signature(sign::V1Method::HmacSha1, secret, &sts)));
    p
}

/// Posts a form; returns status, headers of interest and the JSON body.
fn post_form(url: &str, params: &[(String, String)]) -> (u16, Value, ureq::Response) {
    let form: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let resp = match ureq::post(url).send_form(&form) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = resp.status();
    let clone_headers = resp.header("x-acs-request-id").map(str::to_string);
    let ct = resp.header("content-type").map(str::to_string);
    let body: Value = serde_json::from_str(&resp.into_string().unwrap()).expect("every answer is JSON");
    let mut fake = ureq::Response::new(status, "x", "").unwrap();
    if let (Some(id), Some(ct)) = (clone_headers, ct) {
        fake = format!("HTTP/1.1 {status} x\r\nx-acs-request-id: {id}\r\ncontent-type: {ct}\r\n\r\n").parse().unwrap();
    }
    (status, body, fake)
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!((status, body["Code"].as_str().unwrap_or("<none>")), (want_status, want_code), "{body}");
    for field in ["RequestId", "HostId", "Message", "Recommend"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
}

#[test]
fn error_bodies_have_the_gateway_shape() {
    let s = Server::start();
    let (status, body, resp) = post_form(&s.url(), &v1_params("DescribeKey", &[("KeyId", "key-nope")], SK, |_| {}));
    assert_error(status, &body, 404, "Forbidden.KeyNotFound");
    assert_eq!(resp.header("x-acs-request-id"), body["RequestId"].as_str());
    assert_eq!(resp.header("content-type"), Some("application/json;charset=utf-8"));
    assert!(body["Recommend"].as_str().unwrap().contains("Forbidden.KeyNotFound"));
    let (status, body, _) = post_form(&s.url(), &v1_params("ListKeys", &[("PageSize", "5")], SK, |_| {}));
    assert_eq!(status, 200);
    assert!(body.get("Code").is_none(), "success bodies never carry Code (pop-core)");
    assert!(body["PageSize"].is_u64() && body["TotalCount"].is_u64(), "{body}");
}

#[test]
fn authentication_failures() {
    let s = Server::start();
    let url = s.url();
    // Not signed at all.
    let (st, b, _) = post_form(&url, &[("Action".into(), "DescribeRegions".into())]);
    assert_error(st, &b, 400, "IncompleteSignature");
    // Unknown and disabled access keys.
    let p = v1_params("DescribeRegions", &[], SK, |p| p[3].1 = "nobody".into());
    let (st, b, _) = post_form(&url, &p);
    assert_error(st, &b, 404, "InvalidAccessKeyId.NotFound");
    let p = v1_params("DescribeRegions", &[], "x", |p| p[3].1 = "disabledKey".into());
    let (st, b, _) = post_form(&url, &p);
    assert_error(st, &b, 403, "Forbidden.AccessKey");
    // Wrong secret: the message carries the server's string to sign after a ':' (py-core parses it).
    let p = v1_params("DescribeRegions", &[], "wrong", |_| {});
    let (st, b, _) = post_form(&url, &p);
    assert_error(st, &b, 400, "SignatureDoesNotMatch");
    let expected_sts = sign::v1_string_to_sign(
        "POST",
        p.iter().filter(|(k, _)| k != "Signature").map(|(k, v)| (k.as_str(), v.as_str())),
    );
    assert_eq!(b["Message"].as_str().unwrap().split_once("server string to sign is:").unwrap().1, expected_sts);
    // A parameter changed after signing.
    let mut p = v1_params("Encrypt", &[("KeyId", "k"), ("Plaintext", "aGk=")], SK, |_| {});
    p[8].1 = "other".into();
    let (st, b, _) = post_form(&url, &p);
    assert_error(st, &b, 400, "SignatureDoesNotMatch");
    // Replay: the same signed request twice.
    let p = v1_params("DescribeRegions", &[], SK, |_| {});
    assert_eq!(post_form(&url, &p).0, 200);
    let (st, b, _) = post_form(&url, &p);
    assert_error(st, &b, 400, "SignatureNonceUsed");
    // Clock skew, missing timestamp, missing nonce, unknown signature method.
    let (st, b, _) =
        post_form(&url, &v1_params("DescribeRegions", &[], SK, |p| p[7].1 = "2020-01-01T00:00:00Z".into()));
    assert_error(st, &b, 400, "InvalidTimeStamp.Expired");
    let (st, b, _) = post_form(
        &url,
        &v1_params("DescribeRegions", &[], SK, |p| {
            p.remove(7);
        }),
    );
    assert_error(st, &b, 400, "IllegalTimestamp");
    let (st, b, _) = post_form(&url, &v1_params("DescribeRegions", &[], SK, |p| p[7].1 = "yesterday".into()));
    assert_error(st, &b, 400, "IllegalTimestamp");
    let (st, b, _) = post_form(
        &url,
        &v1_params("DescribeRegions", &[], SK, |p| {
            p.remove(6);
        }),
    );
    assert_error(st, &b, 400, "MissingParameter");
    let (st, b, _) = post_form(&url, &v1_params("DescribeRegions", &[], SK, |p| p[4].1 = "MD5".into()));
    assert_error(st, &b, 400, "InvalidParameter");
    // HMAC-SHA256 is accepted too.
    let mut p = v1_params("DescribeRegions", &[], SK, |p| p[4].1 = "HMAC-SHA256".into());
    p.pop();
    let sts = sign::v1_string_to_sign("POST", p.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    p.push(("Signature".into(), sign::v1_signature(sign::V1Method::HmacSha256, SK, &sts)));
    assert_eq!(post_form(&url, &p).0, 200);
}

#[test]
fn request_shape_errors() {
    let s = Server::start();
    let url = s.url();
    let (st, b, _) = post_form(&url, &v1_params("NoSuchAction", &[], SK, |_| {}));
    assert_error(st, &b, 404, "InvalidAction.NotFound");
    let (st, b, _) = post_form(&url, &v1_params("DescribeRegions", &[], SK, |p| p[1].1 = "2014-05-26".into()));
    assert_error(st, &b, 400, "InvalidVersion");
    let (st, b, _) = post_form(&url, &v1_params("Encrypt", &[("KeyId", "k")], SK, |_| {}));
    assert_error(st, &b, 400, "MissingParameter");
    assert!(b["Message"].as_str().unwrap().contains("\"Plaintext\""));
    let (st, b, _) = post_form(&url, &v1_params("Encrypt", &[("KeyId", "k"), ("Plaintext", "%%%")], SK, |_| {}));
    assert_error(st, &b, 400, "InvalidParameter");
    let (st, b, _) = post_form(&url, &v1_params("CreateKey", &[("EnableAutomaticRotation", "maybe")], SK, |_| {}));
    assert_error(st, &b, 400, "InvalidParameter");
    assert!(b["Message"].as_str().unwrap().contains("EnableAutomaticRotation"));
    let (st, b, _) = post_form(
        &url,
        &v1_params(
            "AsymmetricSign",
            &[("KeyId", "k"), ("KeyVersionId", "v"), ("Algorithm", "ECDSA_SHA_256"), ("Digest", "not*base64")],
            SK,
            |_| {},
        ),
    );
    assert_error(st, &b, 400, "InvalidParameter");
    assert!(b["Message"].as_str().unwrap().contains("\"Digest\""), "{b}");
    let (st, b, _) = post_form(&url, &v1_params("Decrypt", &[("CiphertextBlob", "bm90IGEgYmxvYg==")], SK, |_| {}));
    assert_error(st, &b, 400, "InvalidParameter");
    // Booleans in any case, as the Python SDKs send them.
    let (st, b, _) = post_form(&url, &v1_params("CreateKey", &[("EnableAutomaticRotation", "True")], SK, |_| {}));
    assert_eq!((st, b["KeyMetadata"]["AutomaticRotation"].as_str()), (200, Some("Enabled")));
    // Body over the limit.
    let big = "A".repeat(70 * 1024);
    let (st, b, _) = post_form(&url, &v1_params("Encrypt", &[("KeyId", "k"), ("Plaintext", &big)], SK, |_| {}));
    assert_error(st, &b, 400, "InvalidParameter");
    // Methods other than GET and POST.
    let r = ureq::request("PUT", &url).call();
    let Err(ureq::Error::Status(403, resp)) = r else { panic!("PUT must be refused") };
    let b: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    assert_eq!(b["Code"], "UnsupportedHTTPMethod");
    // GET with everything in the query (pop-core's default) on any path.
    let p = v1_params("DescribeRegions", &[], SK, |_| {});
    let p2: Vec<(String, String)> = p.clone();
    let sts = sign::v1_string_to_sign(
        "GET",
        p2.iter().filter(|(k, _)| k != "Signature").map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let mut q: Vec<(String, String)> = p2.into_iter().filter(|(k, _)| k != "Signature").collect();
    q.push(("Signature".into(), sign::v1_signature(sign::V1Method::HmacSha1, SK, &sts)));
    let qs = form_urlencoded::Serializer::new(String::new()).extend_pairs(q.iter()).finish();
    let r = ureq::get(&format!("{url}any/path?{qs}")).call().unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn v3_signature_checks() {
    let s = Server::start();
    let host = s.running().http.unwrap().to_string();
    let url = s.url();
    let send = |signed: &str, body: &str, hash_override: Option<&str>, omit_from_request: Option<&str>| {
        let hash = sign::sha256_hex(body.as_bytes());
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let date = now_iso();
        let headers: Vec<(String, String)> = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("host", host.as_str()),
            ("x-acs-action", "DescribeRegions"),
            ("x-acs-content-sha256", hash_override.unwrap_or(&hash)),
            ("x-acs-date", date.as_str()),
            ("x-acs-signature-nonce", nonce.as_str()),
            ("x-acs-version", "2016-01-20"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec();
        let cr = sign::v3_canonical_request(
            "POST",
            "/",
            std::iter::empty(),
            &headers,
            signed,
            hash_override.unwrap_or(&hash),
        );
        let sig = sign::v3_signature(SK, &sign::v3_string_to_sign(&cr));
        let mut req = ureq::post(&url);
        for (k, v) in &headers {
            if k != "host" && Some(k.as_str()) != omit_from_request {
                req = req.set(k, v);
            }
        }
        let req = req
            .set("authorization", &format!("ACS3-HMAC-SHA256 Credential={AK},SignedHeaders={signed},Signature={sig}"));
        let resp = match req.send_string(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        (resp.status(), serde_json::from_str::<Value>(&resp.into_string().unwrap()).unwrap())
    };
    let all = "content-type;host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version";
    assert_eq!(send(all, "A=1", None, None).0, 200);
    // The body does not match its signed hash.
    let (st, b) = send(all, "A=1", Some(&sign::sha256_hex(b"A=2")), None);
    assert_error(st, &b, 400, "SignatureDoesNotMatch");
    // The nonce, the date and the action must be signed, or a captured request could be altered.
    for h in ["x-acs-signature-nonce", "x-acs-date", "x-acs-action", "host"] {
        let signed: Vec<&str> = all.split(';').filter(|x| *x != h).collect();
        let (st, b) = send(&signed.join(";"), "A=1", None, None);
        assert_error(st, &b, 400, "IncompleteSignature");
        assert!(b["Message"].as_str().unwrap().contains(h), "{b}");
    }
    let r = ureq::post(&url).set("authorization", "Bearer abc").call();
    let Err(ureq::Error::Status(400, resp)) = r else { panic!("bearer must be refused") };
    assert!(resp.into_string().unwrap().contains("IncompleteSignature"));
}

#[test]
fn client_round_trips_with_both_schemes_over_http_https_and_unix() {
    let s = Server::start();
    for (signing, https) in [(Signing::V1, false), (Signing::V3, false), (Signing::V1, true), (Signing::V3, true)] {
        let c = s.client(signing, https);
        let key =
            c.create_key(&CreateKeyRequest { key_spec: Some("Aliyun_SM4".into()), ..Default::default() }).unwrap();
        let ct = c
            .encrypt(&EncryptRequest {
                key_id: key.key_metadata.key_id.clone(),
                plaintext: SecretBytes::from(&b"a b+c&d=e/f"[..]),
                encryption_context: Some(r#"{"k":"密"}"#.into()),
                dry_run: false,
            })
            .unwrap();
        let pt = c
            .decrypt(&DecryptRequest {
                ciphertext_blob: ct.ciphertext_blob,
                encryption_context: Some(r#"{"k":"密"}"#.into()),
                dry_run: false,
            })
            .unwrap();
        assert_eq!(pt.plaintext.expose(), b"a b+c&d=e/f", "{signing:?} https={https}");
        let e = c.describe_key("key-nope").unwrap_err();
        assert_eq!(e.code(), Some("Forbidden.KeyNotFound"));
    }
    // The Unix socket speaks the same protocol.
    let sock = s.running().data_dir.join("kms.sock");
    let mut stream = std::os::unix::net::UnixStream::connect(sock).unwrap();
    stream.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200") && out.ends_with("pong\n"), "{out}");
}

#[test]
fn ping_and_metrics() {
    let s = Server::start();
    let base = s.url();
    assert_eq!(ureq::get(&format!("{base}ping")).call().unwrap().into_string().unwrap(), "pong\n");
    post_form(&base, &v1_params("DescribeKey", &[("KeyId", "key-nope")], SK, |_| {}));
    post_form(&base, &v1_params("Bogus1", &[], SK, |_| {}));
    let m = ureq::get(&format!("{base}metrics")).call().unwrap().into_string().unwrap();
    assert!(m.contains(r#"kms_requests_total{action="DescribeKey",code="Forbidden.KeyNotFound"} 1"#), "{m}");
    assert!(m.contains(r#"kms_requests_total{action="unknown",code="InvalidAction.NotFound"} 1"#), "{m}");
    assert!(m.contains("kms_request_duration_seconds_count"));
    // The replay cache holds the nonce of each signed request that authenticated.
    let gauge = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name}: {m}"))
    };
    assert!((1..=2).contains(&gauge("kms_replay_nonces")), "{m}");
    assert!(gauge("kms_replay_cache_bytes") >= 16, "{m}");
}

#[test]
fn shutdown_finishes_in_flight_requests_and_loses_no_acknowledged_key() {
    let s = Server::start_with(|c| c.engine.limits.max_keys = 1_000_000);
    let data_dir = s.running().data_dir.clone();
    let c = Arc::new(s.client(Signing::V3, false));
    let worker = {
        let c = c.clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            loop {
                match c.create_key(&CreateKeyRequest::default()) {
                    Ok(r) => acked.push(r.key_metadata.key_id),
                    Err(e) => return (acked, e.to_string()), // the server has stopped accepting
                }
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(150));
    let _dir = s.shutdown();
    let (acked, last_error) = worker.join().unwrap();
    assert!(acked.len() > 5, "the worker was busy when the server stopped");
    assert!(
        last_error.contains("CreateKey to"),
        "the last call failed in transport, not with an API error: {last_error}"
    );
    let engine =
        kms_core::Engine::open(kms_core::EngineOptions::in_dir(&data_dir, Default::default()).unwrap()).unwrap();
    for k in &acked {
        engine.describe_key(&kms_core::Caller::owner(), k).unwrap_or_else(|e| panic!("acknowledged key {k} lost: {e}"));
    }
}
