//! Service grants (GrantServiceKeyUse / RevokeServiceKeyUse): the owner lets a cloud service use
//! one of its CMKs for envelopes, with no policy written – and nothing else: not another service,
//! not another action, not through the tag actions, not past a Deny, not on a service key.
//! Runs on SQLite, or on PostgreSQL with `KMS_TEST_STORE=postgres`.

use std::sync::Arc;

use kms_core::api::*;
use kms_core::engine::PolicySet;
use kms_core::policy::Policy;
use kms_core::test_store::options;
use kms_core::{Caller, Engine, EngineConfig, ErrorCode as E, ManualClock, Principal};

fn open(dir: &std::path::Path) -> Engine {
    Engine::open(options(dir, Arc::new(ManualClock::new(1_700_000_000)), EngineConfig::default())).unwrap()
}

fn grant(e: &Engine, who: &Caller, service: &str, key: &str) -> kms_core::Result<()> {
    e.grant_service_key_use(who, ServiceKeyUseRequest { key_id: key.into(), service: service.into() })
}

fn revoke(e: &Engine, who: &Caller, service: &str, key: &str) -> kms_core::Result<()> {
    e.revoke_service_key_use(who, ServiceKeyUseRequest { key_id: key.into(), service: service.into() })
}

/// A data key under `key` for `who`, and its blob.
fn gdk(e: &Engine, who: &Caller, key: &str) -> kms_core::Result<Vec<u8>> {
    let req = GenerateDataKeyRequest { key_id: key.into(), ..Default::default() };
    e.generate_data_key(who, req).map(|r| r.ciphertext_blob)
}

fn decrypt(e: &Engine, who: &Caller, blob: &[u8]) -> kms_core::Result<DecryptResponse> {
    e.decrypt(who, DecryptRequest { ciphertext_blob: blob.to_vec(), ..Default::default() })
}

fn policy(doc: &str) -> Vec<Policy> {
    vec![Policy::parse("p", doc).unwrap()]
}

#[test]
fn a_grant_lets_one_service_wrap_and_unwrap_under_a_cmk_and_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let (owner, oss, ecs) = (Caller::owner(), Caller::service("oss"), Caller::service("ecs"));
    let key = e.create_key(&owner, CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    let other = e.create_key(&owner, CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    e.create_alias(&owner, "alias/volumes", &key).unwrap();

    // Before: refused, and the refusal names the one step that fixes it.
    let err = gdk(&e, &oss, &key).unwrap_err();
    assert_eq!(err.code(), E::NoPermission);
    assert!(err.to_string().contains(&format!("kmsctl grant-service oss --key-id {key}")), "{err}");

    // Granted by alias: the key it names is granted.
    grant(&e, &owner, " OSS ", "alias/volumes").unwrap();
    let blob = gdk(&e, &oss, &key).unwrap();
    decrypt(&e, &oss, &blob).unwrap();
    let tags = e.list_resource_tags(&owner, &key).unwrap().tags.tag;
    assert!(tags.iter().any(|t| t.tag_key == "acs:service-grant:oss"), "the grant is shown with the key");
    // Rewrap within the granted key; not onto a key that is not granted, not from one either.
    let req = |blob: &[u8], to: &str| ReEncryptRequest {
        ciphertext_blob: blob.to_vec(),
        destination_key_id: to.into(),
        ..Default::default()
    };
    e.re_encrypt(&oss, req(&blob, &key)).unwrap();
    assert_eq!(e.re_encrypt(&oss, req(&blob, &other)).unwrap_err().code(), E::NoPermission);
    let foreign = gdk(&e, &owner, &other).unwrap();
    assert_eq!(decrypt(&e, &oss, &foreign).unwrap_err().code(), E::NoPermission);
    // Another service, other actions: refused.
    assert_eq!(gdk(&e, &ecs, &key).unwrap_err().code(), E::NoPermission);
    assert_eq!(decrypt(&e, &ecs, &blob).unwrap_err().code(), E::NoPermission);
    let enc = EncryptRequest { key_id: key.clone(), plaintext: SecretBytes::from(&b"x"[..]), ..Default::default() };
    assert_eq!(e.encrypt(&oss, enc).unwrap_err().code(), E::NoPermission);
    assert_eq!(e.disable_key(&oss, &key).unwrap_err().code(), E::NoPermission);
    assert_eq!(revoke(&e, &oss, "oss", &key).unwrap_err().code(), E::NoPermission, "a service cannot manage grants");

    // The tag actions can neither forge nor remove a grant; UntagResources All keeps it.
    let forge = TagResourceRequest {
        key_id: Some(other.clone()),
        tags: r#"[{"TagKey":"acs:service-grant:oss","TagValue":"granted"}]"#.into(),
        ..Default::default()
    };
    assert_eq!(e.tag_resource(&owner, forge).unwrap_err().code(), E::InvalidParameter);
    let spelled = CreateKeyRequest {
        tags: Some(r#"[{"TagKey":"ACS:Service-Grant:oss","TagValue":"granted"}]"#.into()),
        ..Default::default()
    };
    assert_eq!(e.create_key(&owner, spelled).unwrap_err().code(), E::InvalidParameter);
    let untag = UntagResourceRequest {
        key_id: Some(key.clone()),
        tag_keys: r#"["acs:service-grant:oss"]"#.into(),
        ..Default::default()
    };
    assert_eq!(e.untag_resource(&owner, untag).unwrap_err().code(), E::InvalidParameter);
    let all = UntagResourcesRequest {
        region_id: EngineConfig::default().region,
        resource_type: "key".into(),
        resource_id: vec![key.clone()],
        tag_key: vec![],
        all: Some(true),
    };
    e.untag_resources(&owner, all).unwrap();
    gdk(&e, &oss, &key).expect("UntagResources All removed the grant");

    // A Deny in the service's own policies wins over the grant.
    let deny = r#"{"Version":"1","Statement":[{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}]}"#;
    e.set_policies(PolicySet::from([(Principal::Service("oss".into()), policy(deny))]));
    assert_eq!(decrypt(&e, &oss, &blob).unwrap_err().code(), E::NoPermission);
    e.set_policies(PolicySet::new());

    // The grant is the store's, not the configuration's: it survives a restart with no policies.
    drop(e);
    let e = open(dir.path());
    decrypt(&e, &oss, &blob).unwrap();

    // Revoked: refused again, and what the service wrapped stays shut to it.
    revoke(&e, &owner, "oss", &key).unwrap();
    assert_eq!(decrypt(&e, &oss, &blob).unwrap_err().code(), E::NoPermission);
    assert_eq!(gdk(&e, &oss, &key).unwrap_err().code(), E::NoPermission);
}

#[test]
fn who_may_grant_and_what_cannot_be_granted() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    let owner = Caller::owner();
    let key = e.create_key(&owner, CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    let theirs = e.create_key(&owner, CreateKeyRequest::default()).unwrap().key_metadata.key_id;

    // A user needs the permission, on that key.
    let ops = Caller::user("ops");
    assert_eq!(grant(&e, &ops, "oss", &key).unwrap_err().code(), E::NoPermission);
    let doc = format!(
        r#"{{"Version":"1","Statement":[{{"Effect":"Allow","Action":"kms:GrantServiceKeyUse","Resource":"acs:kms:*:*:key/{key}"}}]}}"#
    );
    e.set_policies(PolicySet::from([(Principal::User("ops".into()), policy(&doc))]));
    grant(&e, &ops, "ecs", &key).unwrap();
    assert_eq!(grant(&e, &ops, "ecs", &theirs).unwrap_err().code(), E::NoPermission);
    assert_eq!(revoke(&e, &ops, "ecs", &key).unwrap_err().code(), E::NoPermission, "revoking is its own permission");

    // Service keys are their service's; names are checked.
    gdk(&e, &Caller::service("oss"), "alias/acs/oss").unwrap();
    assert_eq!(grant(&e, &owner, "ecs", "alias/acs/oss").unwrap_err().code(), E::UnsupportedOperation);
    for bad in ["", "o s s", "oss:x", "../x"] {
        let code = grant(&e, &owner, bad, &key).unwrap_err().code();
        assert!(matches!(code, E::InvalidParameter | E::MissingParameter), "{bad:?}: {code:?}");
    }
    assert_eq!(grant(&e, &owner, "oss", "key-nope").unwrap_err().code(), E::KeyNotFound);
}
