//! Secrets Manager, tags and GetRandomPassword, in process with a manual clock.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kms_core::api::*;
use kms_core::clock::{ManualClock, DAY};
use kms_core::ErrorCode as E;
use kms_core::Limits;
use kms_core::*;

const T0: i64 = 1_700_000_000;

fn engine_with(limits: Limits) -> (tempfile::TempDir, Arc<ManualClock>, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let e = open(dir.path(), clock.clone(), limits);
    (dir, clock, e)
}

fn open(dir: &Path, clock: Arc<ManualClock>, limits: Limits) -> Engine {
    Engine::open(kms_core::test_store::options(dir, clock, EngineConfig { limits, ..Default::default() })).unwrap()
}

fn engine() -> (tempfile::TempDir, Arc<ManualClock>, Engine) {
    engine_with(Limits::default())
}

fn me() -> Caller {
    Caller::owner()
}

fn create(e: &Engine, name: &str, value: &str) -> Result<CreateSecretResponse> {
    e.create_secret(
        &me(),
        CreateSecretRequest {
            secret_name: name.into(),
            secret_data: SecretString::new(value.into()),
            version_id: "v1".into(),
            ..Default::default()
        },
    )
}

fn get(e: &Engine, name: &str, version: Option<&str>, stage: Option<&str>) -> Result<GetSecretValueResponse> {
    e.get_secret_value(
        &me(),
        GetSecretValueRequest {
            secret_name: name.into(),
            version_id: version.map(Into::into),
            version_stage: stage.map(Into::into),
            ..Default::default()
        },
    )
}

fn put(e: &Engine, name: &str, version: &str, value: &str, stages: Option<&str>) -> Result<PutSecretValueResponse> {
    e.put_secret_value(
        &me(),
        PutSecretValueRequest {
            secret_name: name.into(),
            version_id: version.into(),
            secret_data: SecretString::new(value.into()),
            secret_data_type: None,
            version_stages: stages.map(Into::into),
        },
    )
}

fn stage(
    e: &Engine,
    name: &str,
    stage: &str,
    remove: Option<&str>,
    move_to: Option<&str>,
) -> Result<SecretNameResponse> {
    e.update_secret_version_stage(
        &me(),
        UpdateSecretVersionStageRequest {
            secret_name: name.into(),
            version_stage: stage.into(),
            remove_from_version: remove.map(Into::into),
            move_to_version: move_to.map(Into::into),
        },
    )
}

/// version id → its stages, for every version (deprecated ones included).
fn stages(e: &Engine, name: &str) -> BTreeMap<String, Vec<String>> {
    let l = e
        .list_secret_version_ids(
            &me(),
            ListSecretVersionIdsRequest {
                secret_name: name.into(),
                include_deprecated: Some(true),
                page_size: Some(100),
                ..Default::default()
            },
        )
        .unwrap();
    l.version_ids.version_id.into_iter().map(|v| (v.version_id, v.version_stages.version_stage)).collect()
}

fn map(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs.iter().map(|(v, s)| (v.to_string(), s.iter().map(|x| x.to_string()).collect())).collect()
}

#[test]
fn create_read_describe_list() {
    let (_d, _c, e) = engine();
    let r = create(&e, "db/password", "s3cr3t ✓").unwrap();
    assert_eq!(r.arn, "acs:kms:cn-hangzhou:1234567890123456:secret/db/password");
    let v = get(&e, "db/password", None, None).unwrap();
    assert_eq!(
        (v.secret_data.expose(), v.version_id.as_str(), v.secret_data_type.as_str()),
        ("s3cr3t ✓", "v1", "text")
    );
    assert_eq!(v.version_stages.version_stage, ["ACSCurrent"]);
    assert_eq!(get(&e, &r.arn, None, None).unwrap().secret_data.expose(), "s3cr3t ✓", "the ARN names the secret too");
    let d = e
        .describe_secret(&me(), DescribeSecretRequest { secret_name: "db/password".into(), fetch_tags: None })
        .unwrap();
    let default_key = e.describe_key(&me(), "alias/acs/secretsmanager").unwrap().key_metadata;
    assert_eq!(d.encryption_key_id, default_key.key_id, "no EncryptionKeyId: the secrets service key");
    assert_eq!(default_key.creator, "SECRETSMANAGER");
    assert_eq!(e.list_secrets(&me(), ListSecretsRequest::default()).unwrap().total_count, 1);
    // Errors.
    assert_eq!(create(&e, "db/password", "x").unwrap_err().code(), E::ResourceExist);
    assert_eq!(create(&e, "acs/x", "x").unwrap_err().code(), E::InvalidParameter);
    assert_eq!(create(&e, "bad name", "x").unwrap_err().code(), E::InvalidParameter);
    assert_eq!(create(&e, "big", &"x".repeat(30 * 1024 + 1)).unwrap_err().code(), E::InvalidParameter);
    assert_eq!(get(&e, "nope", None, None).unwrap_err().code(), E::ResourceNotFound);
    assert_eq!(get(&e, "db/password", Some("v9"), None).unwrap_err().code(), E::ResourceNotFound);
    assert_eq!(get(&e, "db/password", None, Some("Custom")).unwrap_err().code(), E::ResourceNotFound);
    let bin = e.create_secret(
        &me(),
        CreateSecretRequest {
            secret_name: "bin".into(),
            secret_data: SecretString::new("not base64!".into()),
            version_id: "v1".into(),
            secret_data_type: Some("binary".into()),
            ..Default::default()
        },
    );
    assert_eq!(bin.unwrap_err().code(), E::InvalidParameter);
    let rds = e.create_secret(
        &me(),
        CreateSecretRequest {
            secret_name: "r".into(),
            secret_data: SecretString::new("x".into()),
            version_id: "v1".into(),
            secret_type: Some("Rds".into()),
            ..Default::default()
        },
    );
    assert_eq!(rds.unwrap_err().code(), E::UnsupportedOperation);
}

#[test]
fn stage_state_machine() {
    let (_d, _c, e) = engine();
    create(&e, "s", "one").unwrap();
    type Step = (&'static str, fn(&Engine) -> Result<()>, &'static [(&'static str, &'static [&'static str])]);
    let steps: Vec<Step> = vec![
        ("initial", |_| Ok(()), &[("v1", &["ACSCurrent"])]),
        (
            "put v2 (default stage)",
            |e| put(e, "s", "v2", "two", None).map(drop),
            &[("v1", &["ACSPrevious"]), ("v2", &["ACSCurrent"])],
        ),
        (
            "put v3",
            |e| put(e, "s", "v3", "three", None).map(drop),
            &[("v1", &[]), ("v2", &["ACSPrevious"]), ("v3", &["ACSCurrent"])],
        ),
        (
            "put v4 with a custom stage only",
            |e| put(e, "s", "v4", "four", Some(r#"["Canary"]"#)).map(drop),
            &[("v1", &[]), ("v2", &["ACSPrevious"]), ("v3", &["ACSCurrent"]), ("v4", &["Canary"])],
        ),
        (
            "move ACSCurrent v3 → v4",
            |e| stage(e, "s", "ACSCurrent", Some("v3"), Some("v4")).map(drop),
            &[("v1", &[]), ("v2", &[]), ("v3", &["ACSPrevious"]), ("v4", &["Canary", "ACSCurrent"])],
        ),
        (
            "move Canary v4 → v1",
            |e| stage(e, "s", "Canary", Some("v4"), Some("v1")).map(drop),
            &[("v1", &["Canary"]), ("v2", &[]), ("v3", &["ACSPrevious"]), ("v4", &["ACSCurrent"])],
        ),
        (
            "remove Canary from v1",
            |e| stage(e, "s", "Canary", Some("v1"), None).map(drop),
            &[("v1", &[]), ("v2", &[]), ("v3", &["ACSPrevious"]), ("v4", &["ACSCurrent"])],
        ),
        (
            "attach a new stage without RemoveFromVersion",
            |e| stage(e, "s", "Beta", None, Some("v2")).map(drop),
            &[("v1", &[]), ("v2", &["Beta"]), ("v3", &["ACSPrevious"]), ("v4", &["ACSCurrent"])],
        ),
        (
            "roll back: ACSCurrent v4 → v3",
            |e| stage(e, "s", "ACSCurrent", Some("v4"), Some("v3")).map(drop),
            &[("v1", &[]), ("v2", &["Beta"]), ("v3", &["ACSCurrent"]), ("v4", &["ACSPrevious"])],
        ),
        (
            "the user guide's rotation step: ACSCurrent → v4 by MoveToVersion alone",
            |e| stage(e, "s", "ACSCurrent", None, Some("v4")).map(drop),
            &[("v1", &[]), ("v2", &["Beta"]), ("v3", &["ACSPrevious"]), ("v4", &["ACSCurrent"])],
        ),
        (
            "a custom stage moved by MoveToVersion alone",
            |e| stage(e, "s", "Beta", None, Some("v1")).map(drop),
            &[("v1", &["Beta"]), ("v2", &[]), ("v3", &["ACSPrevious"]), ("v4", &["ACSCurrent"])],
        ),
        (
            "moving a stage onto the version that has it changes nothing",
            |e| stage(e, "s", "ACSCurrent", None, Some("v4")).map(drop),
            &[("v1", &["Beta"]), ("v2", &[]), ("v3", &["ACSPrevious"]), ("v4", &["ACSCurrent"])],
        ),
    ];
    for (what, op, want) in steps {
        op(&e).unwrap_or_else(|err| panic!("{what}: {err:?}"));
        assert_eq!(stages(&e, "s"), map(want), "after {what}");
    }
    assert_eq!(get(&e, "s", None, None).unwrap().secret_data.expose(), "four");
    assert_eq!(get(&e, "s", None, Some("ACSPrevious")).unwrap().secret_data.expose(), "three");
    assert_eq!(get(&e, "s", Some("v1"), Some("Beta")).unwrap().secret_data.expose(), "one");

    // Refused, each leaving the stages unchanged.
    let before = stages(&e, "s");
    let refusals: Vec<(&str, Result<SecretNameResponse>, E)> = vec![
        ("naming the wrong holder", stage(&e, "s", "ACSCurrent", Some("v1"), Some("v2")), E::InvalidParameter),
        ("naming a holder of a stage nobody has", stage(&e, "s", "Gamma", Some("v1"), Some("v2")), E::InvalidParameter),
        ("removing ACSCurrent", stage(&e, "s", "ACSCurrent", Some("v4"), None), E::InvalidParameter),
        ("removing from a version without it", stage(&e, "s", "Beta", Some("v2"), None), E::InvalidParameter),
        ("unknown version", stage(&e, "s", "Beta", Some("v2"), Some("v9")), E::ResourceNotFound),
        ("neither remove nor move", stage(&e, "s", "Beta", None, None), E::MissingParameter),
    ];
    for (what, r, want) in refusals {
        assert_eq!(r.unwrap_err().code(), want, "{what}");
    }
    assert_eq!(stages(&e, "s"), before);

    // A version id is written once.
    let same = put(&e, "s", "v1", "one", None).unwrap();
    assert_eq!(same.version_stages.version_stage, ["Beta"], "same value again: a no-op");
    assert_eq!(put(&e, "s", "v1", "other", None).unwrap_err().code(), E::ResourceExist);
    assert_eq!(put(&e, "s", "v5", "x", Some("[1]")).unwrap_err().code(), E::InvalidParameter);
    assert_eq!(stages(&e, "s"), before);
}

#[test]
fn deprecated_versions_are_recycled() {
    let (_d, _c, e) = engine_with(Limits { max_secret_versions: 3, ..Default::default() });
    create(&e, "s", "v1").unwrap();
    for i in 2..=6 {
        put(&e, "s", &format!("v{i}"), &format!("value {i}"), None).unwrap();
    }
    assert_eq!(stages(&e, "s"), map(&[("v5", &["ACSPrevious"]), ("v6", &["ACSCurrent"]), ("v4", &[])]));
    let visible = e
        .list_secret_version_ids(&me(), ListSecretVersionIdsRequest { secret_name: "s".into(), ..Default::default() })
        .unwrap();
    assert_eq!(visible.total_count, 2, "deprecated versions are hidden unless asked for");
}

#[test]
fn deletion_window_restore_and_purge() {
    let (_d, clock, e) = engine();
    create(&e, "s", "keep").unwrap();
    let del = |force: Option<bool>, days: Option<i64>| {
        e.delete_secret(
            &me(),
            DeleteSecretRequest {
                secret_name: "s".into(),
                force_delete_without_recovery: force,
                recovery_window_in_days: days,
            },
        )
    };
    assert_eq!(del(None, Some(6)).unwrap_err().code(), E::InvalidParameter);
    assert_eq!(del(None, Some(31)).unwrap_err().code(), E::InvalidParameter);
    assert_eq!(del(Some(true), Some(7)).unwrap_err().code(), E::InvalidParameter);
    let r = del(None, None).unwrap();
    assert_eq!(r.planned_delete_time, kms_core::clock::format_iso(T0 + 30 * DAY), "30 days by default");
    assert_eq!(get(&e, "s", None, None).unwrap_err().code(), E::ResourceInDeleteWindow);
    assert_eq!(put(&e, "s", "v2", "x", None).unwrap_err().code(), E::ResourceInDeleteWindow);
    assert_eq!(create(&e, "s", "again").unwrap_err().code(), E::ResourceInDeleteWindow);
    assert_eq!(del(None, Some(7)).unwrap_err().code(), E::ResourceInDeleteWindow);
    let d = e.describe_secret(&me(), DescribeSecretRequest { secret_name: "s".into(), fetch_tags: None }).unwrap();
    assert_eq!(d.planned_delete_time, r.planned_delete_time);
    e.restore_secret(&me(), SecretNameRequest { secret_name: "s".into() }).unwrap();
    assert_eq!(get(&e, "s", None, None).unwrap().secret_data.expose(), "keep");
    del(None, Some(7)).unwrap();
    clock.advance(7 * DAY - 1);
    assert!(e.run_maintenance().secrets_purged.is_empty());
    clock.advance(1);
    assert_eq!(e.run_maintenance().secrets_purged, ["s"]);
    assert_eq!(get(&e, "s", None, None).unwrap_err().code(), E::ResourceNotFound);
    create(&e, "s", "new life").unwrap();
    del(Some(true), None).unwrap();
    assert_eq!(get(&e, "s", None, None).unwrap_err().code(), E::ResourceNotFound, "forced: gone at once");
}

#[test]
fn the_cmk_state_governs_the_secret() {
    let (_d, clock, e) = engine();
    let key = e.create_key(&me(), CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    e.create_secret(
        &me(),
        CreateSecretRequest {
            secret_name: "s".into(),
            secret_data: SecretString::new("x".into()),
            version_id: "v1".into(),
            encryption_key_id: Some(key.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    e.disable_key(&me(), &key).unwrap();
    assert_eq!(get(&e, "s", None, None).unwrap_err().code(), E::Disabled);
    assert_eq!(put(&e, "s", "v2", "y", None).unwrap_err().code(), E::Disabled);
    e.enable_key(&me(), &key).unwrap();
    put(&e, "s", "v2", "y", None).unwrap();
    e.schedule_key_deletion(&me(), ScheduleKeyDeletionRequest { key_id: key.clone(), pending_window_in_days: Some(7) })
        .unwrap();
    assert_eq!(get(&e, "s", None, None).unwrap_err().code(), E::PendingDeletion);
    clock.advance(7 * DAY);
    e.run_maintenance();
    assert_eq!(get(&e, "s", None, None).unwrap_err().code(), E::KeyNotFound, "its key is gone, so is the value");
    let asym = e
        .create_key(&me(), CreateKeyRequest { key_spec: Some("EC_P256".into()), ..Default::default() })
        .unwrap()
        .key_metadata
        .key_id;
    let r = e.create_secret(
        &me(),
        CreateSecretRequest {
            secret_name: "t".into(),
            secret_data: SecretString::new("x".into()),
            version_id: "v1".into(),
            encryption_key_id: Some(asym),
            ..Default::default()
        },
    );
    assert_eq!(r.unwrap_err().code(), E::InvalidParameter);
}

#[test]
fn values_are_sealed_at_rest_and_survive_a_reopen() {
    let (dir, clock, e) = engine();
    create(&e, "s", "marker-3b9f0c2e-plaintext").unwrap();
    put(&e, "s", "v2", "marker-77aa11ee-plaintext", None).unwrap();
    drop(e);
    for (name, bytes) in kms_core::test_store::stored_files(dir.path()) {
        for m in [&b"marker-3b9f0c2e"[..], b"marker-77aa11ee"] {
            assert!(!bytes.windows(m.len()).any(|w| w == m), "{name} holds a secret value");
        }
    }
    let e = open(dir.path(), clock, Limits::default());
    assert_eq!(get(&e, "s", None, None).unwrap().secret_data.expose(), "marker-77aa11ee-plaintext");
    assert_eq!(
        get(&e, "s", Some("v1"), Some("ACSPrevious")).unwrap().secret_data.expose(),
        "marker-3b9f0c2e-plaintext"
    );
}

#[test]
fn batch_get_reports_each_secret() {
    let (_d, _c, e) = engine();
    create(&e, "a", "1").unwrap();
    create(&e, "b", "2").unwrap();
    let r = e
        .batch_get_secret_value(
            &me(),
            BatchGetSecretValueRequest { secrets_list: r#"[{"SecretName":"a"},{"SecretName":"nope"},{"SecretName":"b","VersionId":"v1","FetchExtendedConfig":"true"}]"#.into() },
        )
        .unwrap();
    assert_eq!(r.secret_values.iter().map(|v| v.secret_data.expose()).collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(
        (r.errors[0].secret_name.as_str(), r.errors[0].code.as_str(), r.errors[0].http_status),
        ("nope", "Forbidden.ResourceNotFound", 404)
    );
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["Errors"][0]["HttpStatus"].is_u64());
    let too_many = format!("[{}]", [r#"{"SecretName":"a"}"#; 11].join(","));
    assert_eq!(
        e.batch_get_secret_value(&me(), BatchGetSecretValueRequest { secrets_list: too_many }).unwrap_err().code(),
        E::InvalidParameter
    );
    assert_eq!(
        e.batch_get_secret_value(&me(), BatchGetSecretValueRequest { secrets_list: "{".into() }).unwrap_err().code(),
        E::InvalidParameter
    );
}

#[test]
fn list_and_update_secrets() {
    let (_d, _c, e) = engine();
    for (n, d) in [("app/db", "database"), ("app/api", "api token"), ("ops/ssh", "bastion")] {
        e.create_secret(
            &me(),
            CreateSecretRequest {
                secret_name: n.into(),
                secret_data: SecretString::new("x".into()),
                version_id: "v1".into(),
                description: Some(d.into()),
                tags: Some(format!(r#"[{{"TagKey":"team","TagValue":"{}"}}]"#, &n[..3])),
                ..Default::default()
            },
        )
        .unwrap();
    }
    let list = |f: &str| {
        e.list_secrets(
            &me(),
            ListSecretsRequest { filters: Some(f.into()), fetch_tags: Some(true), ..Default::default() },
        )
        .map(|r| r.secret_list.secret.into_iter().map(|s| s.secret_name).collect::<Vec<_>>())
    };
    // Insertion order, as ListSecrets pages always list.
    assert_eq!(list(r#"[{"Key":"SecretName","Values":["app/"]}]"#).unwrap(), ["app/db", "app/api"]);
    assert_eq!(list(r#"[{"Key":"Description","Values":["bastion"]}]"#).unwrap(), ["ops/ssh"]);
    assert_eq!(list(r#"[{"Key":"TagValue","Values":["ops"]}]"#).unwrap(), ["ops/ssh"]);
    assert_eq!(list(r#"[{"Key":"Color","Values":["x"]}]"#).unwrap_err().code(), E::InvalidParameter);
    assert_eq!(list("not json").unwrap_err().code(), E::InvalidParameter);
    e.update_secret(
        &me(),
        UpdateSecretRequest {
            secret_name: "app/db".into(),
            description: Some("primary".into()),
            extended_config: Some(r#"{"CustomData":{"a":"b"}}"#.into()),
        },
    )
    .unwrap();
    let d = e
        .describe_secret(&me(), DescribeSecretRequest { secret_name: "app/db".into(), fetch_tags: Some(true) })
        .unwrap();
    assert_eq!((d.description.as_str(), d.extended_config.as_str()), ("primary", r#"{"CustomData":{"a":"b"}}"#));
    assert_eq!(d.tags.unwrap().tag[0].tag_key, "team");
    let bad = e.update_secret(
        &me(),
        UpdateSecretRequest { secret_name: "app/db".into(), description: None, extended_config: Some("[1]".into()) },
    );
    assert_eq!(bad.unwrap_err().code(), E::InvalidParameter);
    let v = e
        .get_secret_value(
            &me(),
            GetSecretValueRequest {
                secret_name: "app/db".into(),
                fetch_extended_config: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(v.extended_config, r#"{"CustomData":{"a":"b"}}"#);
}

#[test]
fn tags_on_keys_and_secrets() {
    let (_d, clock, e) = engine_with(Limits { max_tags_per_resource: 3, ..Default::default() });
    let key = e.create_key(&me(), CreateKeyRequest::default()).unwrap().key_metadata.key_id;
    create(&e, "s", "x").unwrap();
    e.tag_resource(
        &me(),
        TagResourceRequest {
            key_id: Some(key.clone()),
            tags: r#"[{"TagKey":"env","TagValue":"prod"}]"#.into(),
            ..Default::default()
        },
    )
    .unwrap();
    let tags = e.list_resource_tags(&me(), &key).unwrap().tags.tag;
    assert_eq!(
        (tags[0].key_id.as_str(), tags[0].tag_key.as_str(), tags[0].tag_value.as_str()),
        (key.as_str(), "env", "prod")
    );
    for bad in [
        r#"[{"TagKey":"acs:x","TagValue":"1"}]"#,
        r#"[{"TagKey":"aliyun-x"}]"#,
        r#"[{"TagKey":""}]"#,
        "{}",
        r#"[{"TagKey":"k","TagValue":1}]"#,
    ] {
        let r = e.tag_resource(
            &me(),
            TagResourceRequest { key_id: Some(key.clone()), tags: bad.into(), ..Default::default() },
        );
        assert_eq!(r.unwrap_err().code(), E::InvalidParameter, "{bad}");
    }
    let none = e.tag_resource(&me(), TagResourceRequest { tags: "[]".into(), ..Default::default() });
    assert_eq!(none.unwrap_err().code(), E::MissingParameter);
    let multi = |keys: &[&str]| TagResourcesRequest {
        region_id: "cn-hangzhou".into(),
        resource_type: "secret".into(),
        resource_id: vec!["s".into()],
        tag: keys.iter().map(|k| TagKv { key: k.to_string(), value: Some("v".into()) }).collect(),
    };
    e.tag_resources(&me(), multi(&["a", "b", "c"])).unwrap();
    assert_eq!(e.tag_resources(&me(), multi(&["d"])).unwrap_err().code(), E::LimitExceeded, "at most 3 per resource");
    let mut wrong_region = multi(&["a"]);
    wrong_region.region_id = "cn-beijing".into();
    assert_eq!(e.tag_resources(&me(), wrong_region).unwrap_err().code(), E::InvalidParameter);
    let listed = e
        .list_tag_resources(
            &me(),
            ListTagResourcesRequest {
                region_id: "cn-hangzhou".into(),
                resource_type: "secret".into(),
                tag: vec![TagKv { key: "b".into(), value: None }],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(listed.tag_resources.tag_resource.len(), 3);
    e.untag_resources(
        &me(),
        UntagResourcesRequest {
            region_id: "cn-hangzhou".into(),
            resource_type: "secret".into(),
            resource_id: vec!["s".into()],
            tag_key: vec!["a".into()],
            all: None,
        },
    )
    .unwrap();
    e.untag_resource(
        &me(),
        UntagResourceRequest { secret_name: Some("s".into()), tag_keys: "b, c".into(), ..Default::default() },
    )
    .unwrap();
    let d =
        e.describe_secret(&me(), DescribeSecretRequest { secret_name: "s".into(), fetch_tags: Some(true) }).unwrap();
    assert!(d.tags.unwrap().tag.is_empty());
    // A deleted key takes its tags with it.
    e.schedule_key_deletion(&me(), ScheduleKeyDeletionRequest { key_id: key.clone(), pending_window_in_days: Some(7) })
        .unwrap();
    clock.advance(7 * DAY);
    e.run_maintenance();
    assert!(e.stored_tags(kms_core::model::ResourceType::Key).iter().all(|(id, _, _)| id != &key));
}

#[test]
fn random_passwords() {
    let (_d, _c, e) = engine();
    let gen =
        |r: GetRandomPasswordRequest| e.get_random_password(&me(), r).map(|p| p.random_password.expose().to_string());
    let p = gen(GetRandomPasswordRequest::default()).unwrap();
    assert_eq!(p.chars().count(), 32);
    assert!(p.chars().any(|c| c.is_ascii_lowercase()) && p.chars().any(|c| c.is_ascii_uppercase()));
    assert!(p.chars().any(|c| c.is_ascii_digit()) && p.chars().any(|c| c.is_ascii_punctuation()));
    for n in [8, 128] {
        assert_eq!(
            gen(GetRandomPasswordRequest { password_length: Some(n), ..Default::default() }).unwrap().len(),
            n as usize
        );
    }
    for n in [7, 129] {
        assert_eq!(
            gen(GetRandomPasswordRequest { password_length: Some(n), ..Default::default() }).unwrap_err().code(),
            E::InvalidParameter
        );
    }
    let digits = gen(GetRandomPasswordRequest {
        exclude_lowercase: Some(true),
        exclude_uppercase: Some(true),
        exclude_punctuation: Some(true),
        exclude_characters: Some("0123".into()),
        password_length: Some(64),
        ..Default::default()
    })
    .unwrap();
    assert!(digits.chars().all(|c| ('4'..='9').contains(&c)), "{digits}");
    let all_out = GetRandomPasswordRequest {
        exclude_lowercase: Some(true),
        exclude_uppercase: Some(true),
        exclude_punctuation: Some(true),
        exclude_numbers: Some(true),
        ..Default::default()
    };
    assert_eq!(gen(all_out).unwrap_err().code(), E::InvalidParameter);
    // Uniform: over 6,000 digits from {4..9}, each appears near 1,000 times (a 6-sigma bound).
    let mut counts = [0usize; 10];
    for _ in 0..50 {
        let s = gen(GetRandomPasswordRequest {
            exclude_lowercase: Some(true),
            exclude_uppercase: Some(true),
            exclude_punctuation: Some(true),
            exclude_characters: Some("0123".into()),
            password_length: Some(120),
            require_each_included_type: Some(false),
            ..Default::default()
        })
        .unwrap();
        for c in s.chars() {
            counts[c.to_digit(10).unwrap() as usize] += 1;
        }
    }
    for c in &counts[4..] {
        assert!((820..=1180).contains(c), "{counts:?}");
    }
}
