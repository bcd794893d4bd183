//! The secret directory (`directory.rs`) answers filtered ListSecrets pages from memory: after
//! any sequence of creates, deletions, description and tag changes – and across a reopen – every
//! page and total must be what the store's own scan finds. Runs on the backend `KMS_TEST_STORE`
//! names; the shared-store build under concurrent writes is in `tests_shared.rs`.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::api::*;
use crate::clock::ManualClock;
use crate::store::reads::SecretCond;

const T0: i64 = 1_700_000_000;

fn me() -> Caller {
    Caller::owner()
}

/// The filters checked, as a client sends them and as the store's scan takes them.
fn filters() -> Vec<(&'static str, Vec<SecretCond>)> {
    use SecretCond::*;
    let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        (r#"[{"Key":"SecretName","Values":["app/"]}]"#, vec![NameContains(v(&["app/"]))]),
        (r#"[{"Key":"SecretName","Values":["db"]}]"#, vec![NameContains(v(&["db"]))]),
        (r#"[{"Key":"SecretName","Values":["1"]}]"#, vec![NameContains(v(&["1"]))]),
        (r#"[{"Key":"SecretName","Values":[""]}]"#, vec![NameContains(v(&[""]))]),
        (r#"[{"Key":"SecretName","Values":["ops/","api"]}]"#, vec![NameContains(v(&["ops/", "api"]))]),
        (r#"[{"Key":"SecretName","Values":["-1app"]}]"#, vec![NameContains(v(&["-1app"]))]),
        (r#"[{"Key":"Description","Values":["a"]}]"#, vec![DescriptionContains(v(&["a"]))]),
        (r#"[{"Key":"Description","Values":["token","host"]}]"#, vec![DescriptionContains(v(&["token", "host"]))]),
        (r#"[{"Key":"TagKey","Values":["team"]}]"#, vec![TagKey(v(&["team"]))]),
        (r#"[{"Key":"TagKey","Values":["env","nope"]}]"#, vec![TagKey(v(&["env", "nope"]))]),
        (r#"[{"Key":"TagValue","Values":["ops"]}]"#, vec![TagValue(v(&["ops"]))]),
        (
            r#"[{"Key":"SecretName","Values":["app/"]},{"Key":"TagValue","Values":["app","prod"]}]"#,
            vec![NameContains(v(&["app/"])), TagValue(v(&["app", "prod"]))],
        ),
        (
            r#"[{"Key":"TagKey","Values":["team"]},{"Key":"SecretName","Values":["2"]},{"Key":"Description","Values":["a"]}]"#,
            vec![TagKey(v(&["team"])), NameContains(v(&["2"])), DescriptionContains(v(&["a"]))],
        ),
    ]
}

/// Every filter, at several pages, listed by the engine and by the store's scan.
fn check(e: &Engine, when: &str) {
    for (json, conds) in filters() {
        for (number, size) in [(1, 3), (2, 3), (4, 3), (1, 100), (2, 7), (30, 10)] {
            let r = e
                .list_secrets(
                    &me(),
                    ListSecretsRequest {
                        filters: Some(json.into()),
                        page_number: Some(number),
                        page_size: Some(size),
                        ..Default::default()
                    },
                )
                .unwrap();
            let got: Vec<String> = r.secret_list.secret.iter().map(|s| s.secret_name.clone()).collect();
            let offset = ((number - 1) * size) as u64;
            let (want, total) = e.stored_secret_page(&conds, offset, size as u32);
            assert_eq!((got, r.total_count as u64), (want, total), "{when}: {json} page {number} of {size}");
        }
    }
}

fn random_step(e: &Engine, rng: &mut StdRng) {
    let prefixes = ["app/db-", "app/api-", "ops/", "x.y@z+"];
    let name = format!("{}{}", prefixes[rng.gen_range(0..prefixes.len())], rng.gen_range(0..12));
    let descriptions = ["", "database", "api token", "bastion host", "a"];
    let description = descriptions[rng.gen_range(0..descriptions.len())].to_string();
    let tags = [("team", "app"), ("team", "ops"), ("env", "prod"), ("owner", "ops")];
    let (tk, tv) = tags[rng.gen_range(0..tags.len())];
    // Errors (a name that exists, or does not) are part of the walk: they change nothing.
    let _ = match rng.gen_range(0..8) {
        0..=2 => e
            .create_secret(
                &me(),
                CreateSecretRequest {
                    secret_name: name,
                    secret_data: SecretString::new("v".into()),
                    version_id: "v1".into(),
                    description: Some(description),
                    tags: rng.gen_bool(0.5).then(|| format!(r#"[{{"TagKey":"{tk}","TagValue":"{tv}"}}]"#)),
                    ..Default::default()
                },
            )
            .map(drop),
        3 => e
            .delete_secret(
                &me(),
                DeleteSecretRequest {
                    secret_name: name,
                    force_delete_without_recovery: Some(true),
                    ..Default::default()
                },
            )
            .map(drop),
        4 => e
            .update_secret(
                &me(),
                UpdateSecretRequest { secret_name: name, description: Some(description), extended_config: None },
            )
            .map(drop),
        5 => e.tag_resource(
            &me(),
            TagResourceRequest {
                secret_name: Some(name),
                tags: format!(r#"[{{"TagKey":"{tk}","TagValue":"{tv}"}}]"#),
                ..Default::default()
            },
        ),
        6 => e.untag_resource(
            &me(),
            UntagResourceRequest { secret_name: Some(name), tag_keys: format!(r#"["{tk}"]"#), ..Default::default() },
        ),
        _ => match rng.gen_bool(0.5) {
            true => e
                .delete_secret(
                    &me(),
                    DeleteSecretRequest { secret_name: name, recovery_window_in_days: Some(7), ..Default::default() },
                )
                .map(drop),
            false => e.restore_secret(&me(), SecretNameRequest { secret_name: name }).map(drop),
        },
    };
}

#[test]
fn filtered_pages_from_the_directory_are_what_the_store_scan_finds() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let open = || Engine::open(crate::test_store::options(dir.path(), clock.clone(), EngineConfig::default())).unwrap();
    let mut e = open();
    let mut rng = StdRng::seed_from_u64(7);
    // Built on the first filtered listing, then kept by the changes alone.
    check(&e, "empty");
    for round in 0..12 {
        for _ in 0..40 {
            random_step(&e, &mut rng);
        }
        check(&e, &format!("round {round}"));
        if round == 5 {
            drop(e);
            e = open();
            check(&e, "reopened");
        }
    }
    assert!(e.state.read().directory().is_some_and(|d| d.len() > 10), "the walk left secrets listed");
}
