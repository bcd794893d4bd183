//! The management console over raw HTTP against the real sidecar: sign-in and sessions, CSRF and
//! origin checks, security headers, escaping of stored strings, a limited principal refused by
//! the engine, the audit trail attributing console actions, and the listener's address rule.
//! (`console_browser.rs` walks the same console in Chromium.)

mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::{start_fails, Sidecar};
use kms_core::api::*;

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 exchange, nothing followed: the test sees every redirect and header.
fn http(
    base: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    extra: &[(&str, &str)],
    form: &[(&str, &str)],
) -> Answer {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\nuser-agent: console-test\r\n");
    if let Some(c) = cookie {
        req.push_str(&format!("cookie: {c}\r\n"));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Answer { status, headers, body: body.to_string() }
}

/// Signs in and returns the cookie (`name=value`) and the CSRF token of the first page.
fn sign_in(base: &str, id: &str, secret: &str) -> (String, String) {
    let a = http(base, "POST", "/signin", None, &[], &[("AccessKeyId", id), ("AccessKeySecret", secret)]);
    assert_eq!(a.status, 303, "{}", a.body);
    let set = a.header("set-cookie").unwrap().to_string();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let page = http(base, "GET", "/keys", Some(&cookie), &[], &[]);
    assert_eq!(page.status, 200);
    (cookie, csrf(&page.body))
}

fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + 19;
    body[at..at + 64].to_string()
}

fn keys(s: &Sidecar) -> Vec<String> {
    let v: serde_json::Value = s.client().call_params("ListKeys", vec![("PageSize".into(), "100".into())]).unwrap();
    v["Keys"]["Key"].as_array().unwrap().iter().map(|k| k["KeyId"].as_str().unwrap().to_string()).collect()
}

#[test]
fn sessions_csrf_escaping_refusals_and_the_trail() {
    let s = Sidecar::with_config(common::CONSOLE_CONFIG);
    let base = s.console.clone().expect("the console listens");

    // Signed out: pages send to the sign-in page; a wrong secret is refused without saying which
    // half was wrong.
    let a = http(&base, "GET", "/keys", None, &[], &[]);
    assert_eq!((a.status, a.header("location")), (303, Some("/signin")));
    let wrong =
        http(&base, "POST", "/signin", None, &[], &[("AccessKeyId", common::OWNER_ID), ("AccessKeySecret", "nope")]);
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("The access key or its secret is wrong."), "{}", wrong.body);
    assert!(wrong.header("set-cookie").is_none());

    let (cookie, token) = sign_in(&base, common::OWNER_ID, common::OWNER_SECRET);
    let page = http(&base, "GET", "/keys", Some(&cookie), &[], &[]);
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(!page.body.contains("<script"), "no script on any page");

    // A change without the session's token, or posted from another origin, changes nothing.
    let hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let create = |cookie: &str, extra: &[(&str, &str)], token: &str| {
        http(
            &base,
            "POST",
            "/key/create",
            Some(cookie),
            extra,
            &[
                ("csrf", token),
                ("KeySpec", "Aliyun_AES_256"),
                ("KeyUsage", "ENCRYPT/DECRYPT"),
                ("Origin", "Aliyun_KMS"),
                ("ProtectionLevel", "SOFTWARE"),
                ("Description", hostile),
                ("AliasName", "alias/console"),
            ],
        )
    };
    assert_eq!(create(&cookie, &[], "").status, 403);
    assert_eq!(create(&cookie, &[], &"0".repeat(64)).status, 403);
    assert_eq!(create(&cookie, &[("origin", "http://evil.example")], &token).status, 403);
    assert!(keys(&s).is_empty(), "no refused form created a key");

    // The real form: the key is made, its description shown as text.
    let made = create(&cookie, &[("origin", base.trim_end_matches('/'))], &token);
    assert_eq!(made.status, 303, "{}", made.body);
    let detail = made.header("location").unwrap().to_string();
    assert!(detail.starts_with("/key?id=key-"), "{detail}");
    let key = keys(&s).pop().unwrap();
    let shown = http(&base, "GET", &detail, Some(&cookie), &[], &[]);
    assert!(
        shown.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"),
        "{}",
        shown.body
    );
    assert!(!shown.body.contains("<script>") && !shown.body.contains("<img src=x"));
    assert!(shown.body.contains("alias/console"));
    let desc = s.client().describe_key(&key).unwrap().key_metadata.description;
    assert_eq!(desc, hostile, "stored as typed");

    // A principal the policy allows only to look: the page shows the engine's own refusal.
    let (viewer, vtoken) = sign_in(&base, "viewerKey", "viewerSecret");
    assert!(http(&base, "GET", "/keys", Some(&viewer), &[], &[]).body.contains(&key), "it may list");
    let refused =
        http(&base, "POST", "/key/op", Some(&viewer), &[], &[("csrf", &vtoken), ("KeyId", &key), ("op", "disable")]);
    assert_eq!(refused.status, 303);
    let after = http(&base, "GET", refused.header("location").unwrap(), Some(&viewer), &[], &[]);
    assert!(after.body.contains("Forbidden.NoPermission (HTTP 403)"), "{}", after.body);
    assert_eq!(s.client().describe_key(&key).unwrap().key_metadata.key_state, "Enabled");
    assert_eq!(http(&base, "GET", "/audit", Some(&viewer), &[], &[]).status, 403, "the trail is the owner's");
    // One session's token does not pass in another's.
    let crossed =
        http(&base, "POST", "/key/op", Some(&viewer), &[], &[("csrf", &token), ("KeyId", &key), ("op", "disable")]);
    assert_eq!(crossed.status, 403);

    // The owner's audit page shows the viewer's refusal and a verified chain.
    let audit = http(&base, "GET", "/audit?principal=user:viewer", Some(&cookie), &[], &[]);
    assert_eq!(audit.status, 200);
    assert!(audit.body.contains("Forbidden.NoPermission") && audit.body.contains("DisableKey"), "{}", audit.body);
    assert!(audit.body.contains("id=\"chain\"") && audit.body.contains("Chain verified"), "{}", audit.body);
    assert!(audit.body.contains("<svg"), "the plots are drawn");

    // Chinese, as the guides write it.
    let zh = http(&base, "GET", "/lang?to=zh&back=/keys", Some(&cookie), &[], &[]);
    assert_eq!(zh.status, 303);
    let lang = zh.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let page = http(&base, "GET", "/keys", Some(&format!("{cookie}; {lang}")), &[], &[]);
    assert!(page.body.contains("密钥列表") && page.body.contains("lang=\"zh-CN\""), "{}", page.body);

    // Signing out ends the session on the server, not just in the browser.
    let out = http(&base, "POST", "/signout", Some(&cookie), &[], &[("csrf", &token)]);
    assert_eq!(out.status, 303);
    assert_eq!(http(&base, "GET", "/keys", Some(&cookie), &[], &[]).header("location"), Some("/signin"));

    // The trail names the console's calls like the API's, as the principal who made them.
    let dir = s.stop();
    let q = kms_sidecar::audit::Query::default();
    let events = kms_sidecar::audit::query(&dir.path().join("audit"), &q).unwrap();
    let console: Vec<_> = events.iter().filter(|e| e.user_agent.starts_with("console; ")).collect();
    assert!(console.iter().any(|e| e.action == "CreateKey" && e.principal == "owner" && e.code == "OK"));
    assert!(console
        .iter()
        .any(|e| e.action == "DisableKey" && e.principal == "user:viewer" && e.code == "Forbidden.NoPermission"));
    let sign_ins: Vec<_> = console.iter().filter(|e| e.action == "ConsoleSignIn").map(|e| e.code.as_str()).collect();
    assert_eq!(sign_ins, ["InvalidAccessKeyId.NotFound", "OK", "OK"], "every sign-in, and the failed one");
    let _ = CreateKeyRequest::default();
}

#[test]
fn the_console_is_off_unless_asked_for_and_stays_off_public_addresses_without_tls() {
    let s = Sidecar::start();
    assert!(s.console.is_none());
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = start_fails(dir.path(), &["--console-listen", "0.0.0.0:0"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a loopback address") && err.contains("[console] tls"), "{err}");
}

#[test]
fn tools_public_keys_secrets_and_the_key_list_filters() {
    let s = Sidecar::with_config(common::CONSOLE_CONFIG);
    let base = s.console.clone().unwrap();
    let (cookie, token) = sign_in(&base, common::OWNER_ID, common::OWNER_SECRET);
    let c = s.client();
    let ec = c
        .create_key(&CreateKeyRequest {
            key_spec: Some("EC_P256".into()),
            key_usage: Some("SIGN/VERIFY".into()),
            ..Default::default()
        })
        .unwrap()
        .key_metadata
        .key_id;
    for _ in 0..23 {
        c.create_key(&CreateKeyRequest::default()).unwrap();
    }
    let versions: serde_json::Value = c.call_params("ListKeyVersions", vec![("KeyId".into(), ec.clone())]).unwrap();
    let version = versions["KeyVersions"]["KeyVersion"][0]["KeyVersionId"].as_str().unwrap().to_string();

    // The public key as a file to save, in PEM.
    let pem = http(&base, "GET", &format!("/key/public-key?id={ec}&version={version}"), Some(&cookie), &[], &[]);
    assert_eq!(pem.status, 200);
    assert!(pem.header("content-disposition").unwrap().starts_with("attachment; filename="), "{:?}", pem.headers);
    assert!(pem.body.starts_with("-----BEGIN PUBLIC KEY-----"), "{}", pem.body);

    // Sign, then verify the same message and a changed one.
    let tool = |form: &[(&str, &str)]| {
        let mut f = vec![("csrf", token.as_str())];
        f.extend_from_slice(form);
        http(&base, "POST", "/tools/run", Some(&cookie), &[], &f).body
    };
    let signed = tool(&[
        ("op", "sign"),
        ("KeyId", &ec),
        ("KeyVersionId", &version),
        ("Algorithm", "ECDSA_SHA_256"),
        ("Message", "contract"),
    ]);
    let at = signed.find("data-field=\"Value\">").expect("a signature") + 19;
    let signature = signed[at..].split('<').next().unwrap().to_string();
    let verify = |message: &str| {
        tool(&[
            ("op", "verify"),
            ("KeyId", &ec),
            ("KeyVersionId", &version),
            ("Algorithm", "ECDSA_SHA_256"),
            ("Message", message),
            ("Value", &signature),
        ])
    };
    assert!(verify("contract").contains("The signature verifies."));
    assert!(verify("contract!").contains("The signature does not verify."));

    // Paging and filters happen on the server: 24 enabled keys are two pages; one spec filters.
    let page1 = http(&base, "GET", "/keys", Some(&cookie), &[], &[]).body;
    assert!(page1.contains("Page 1 / 2 · 24") && page1.contains("rel=\"next\""), "paged");
    assert_eq!(page1.matches("href=\"/key?id=").count(), 20);
    let page2 = http(&base, "GET", "/keys?page=2", Some(&cookie), &[], &[]).body;
    assert_eq!(page2.matches("href=\"/key?id=").count(), 4);
    let only_ec = http(&base, "GET", "/keys?spec=EC_P256", Some(&cookie), &[], &[]).body;
    assert_eq!(only_ec.matches("href=\"/key?id=").count(), 1);
    assert!(only_ec.contains(&ec));

    // A secret deleted with a recovery window shows its date and comes back with Restore; one
    // deleted at once is gone.
    let op = |form: &[(&str, &str)]| {
        let mut f = vec![("csrf", token.as_str())];
        f.extend_from_slice(form);
        http(&base, "POST", "/secret/op", Some(&cookie), &[], &f)
    };
    let made = http(
        &base,
        "POST",
        "/secret/create",
        Some(&cookie),
        &[],
        &[("csrf", &token), ("SecretName", "app/db"), ("SecretData", "pw"), ("VersionId", "v1")],
    );
    assert_eq!(made.header("location"), Some("/secret?name=app%2Fdb"));
    op(&[("SecretName", "app/db"), ("op", "delete"), ("RecoveryWindowInDays", "7")]);
    let page = http(&base, "GET", "/secret?name=app%2Fdb", Some(&cookie), &[], &[]).body;
    let planned =
        page.split("data-field=\"PlannedDeleteTime\">").nth(1).unwrap().split('<').next().unwrap().to_string();
    assert!(planned.starts_with("20"), "{planned}");
    op(&[("SecretName", "app/db"), ("op", "restore")]);
    assert_eq!(
        c.call_params("DescribeSecret", vec![("SecretName".into(), "app/db".into())]).unwrap()["PlannedDeleteTime"],
        ""
    );
    let gone = op(&[("SecretName", "app/db"), ("op", "delete"), ("Force", "true")]);
    assert_eq!(gone.header("location"), Some("/secrets"));
    assert!(c.call_params("DescribeSecret", vec![("SecretName".into(), "app/db".into())]).is_err());
}

#[test]
fn over_https_the_session_cookie_is_secure_and_host_bound() {
    let s = Sidecar::with_config("[console]\nlisten = \"127.0.0.1:0\"\ntls = true\n");
    let base = s.console.clone().unwrap();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let ca = s.dir.path().join("tls/ca.pem");
    // Python's ssl module, checking the certificate against the sidecar's CA.
    let script = r#"
import os, ssl, sys, urllib.parse, urllib.request
class Stop(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k): return None
ctx = ssl.create_default_context(cafile=os.environ["CA"])
opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), Stop)
body = urllib.parse.urlencode({"AccessKeyId": os.environ["AK"], "AccessKeySecret": os.environ["SK"]}).encode()
req = urllib.request.Request(os.environ["URL"] + "signin", data=body, headers={"Origin": os.environ["URL"].rstrip("/")})
try:
    opener.open(req)
except urllib.error.HTTPError as e:
    print(e.code, e.headers.get("Set-Cookie"))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .env("CA", &ca)
        .env("URL", &base)
        .env("AK", common::OWNER_ID)
        .env("SK", common::OWNER_SECRET)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("303 __Host-kms_console="), "{text}");
    assert!(text.contains("Secure") && text.contains("HttpOnly") && text.contains("SameSite=Strict"), "{text}");
}

#[test]
fn a_person_signs_in_with_a_console_password_and_acts_as_their_principal() {
    // The hash comes from the sidecar's own command, as an operator makes it.
    let mut child = Command::new(kms_e2e::bin("kms-sidecar"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a long console password\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let config = format!(
        "{}\n[[console.users]]\nname = \"alice\"\nprincipal = \"user:viewer\"\npassword_hash = \"{hash}\"\n",
        common::CONSOLE_CONFIG
    );
    let s = Sidecar::with_config(&config);
    let base = s.console.clone().unwrap();
    let wrong = http(
        &base,
        "POST",
        "/signin",
        None,
        &[],
        &[("AccessKeyId", "alice"), ("AccessKeySecret", "a long console passwort")],
    );
    assert_eq!(wrong.status, 401);
    let (cookie, _) = sign_in(&base, "alice", "a long console password");
    let page = http(&base, "GET", "/keys", Some(&cookie), &[], &[]);
    assert!(page.body.contains("id=\"principal\">user:viewer<"), "acts as the entry's principal");
    let dir = s.stop();
    let events = kms_sidecar::audit::query(&dir.path().join("audit"), &Default::default()).unwrap();
    let sign_ins: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.action == "ConsoleSignIn")
        .map(|e| (e.access_key_id.as_str(), e.code.as_str()))
        .collect();
    assert_eq!(sign_ins, [("console:alice", "InvalidAccessKeyId.NotFound"), ("console:alice", "OK")]);
    assert!(events
        .iter()
        .any(|e| e.action == "ListKeys" && e.access_key_id == "console:alice" && e.principal == "user:viewer"));
    // A user named like an access key, or a plain password in place of a hash: refused at start.
    for bad in [
        format!("[[console.users]]\nname = \"viewerKey\"\nprincipal = \"user:viewer\"\npassword_hash = \"{hash}\"\n"),
        "[[console.users]]\nname = \"bob\"\nprincipal = \"user:viewer\"\npassword_hash = \"hunter2\"\n".to_string(),
    ] {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("c.toml");
        std::fs::write(&path, format!("{}\n{bad}", common::CONSOLE_CONFIG)).unwrap();
        let (code, err) = start_fails(d.path(), &["--config", path.to_str().unwrap()], &[]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("console.users[0]"), "{err}");
    }
}
