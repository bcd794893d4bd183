//! `kmsctl`: the KMS from a shell.
//!
//! Any API action in the style of `aliyun kms <Action>`:
//!     kmsctl CreateKey --KeySpec Aliyun_SM4 --Description "db key"
//!     kmsctl Encrypt --KeyId alias/app --Plaintext SGVsbG8=
//! and verbs for people:
//!     kmsctl create-key --spec Aliyun_AES_256 --alias alias/app
//!     kmsctl encrypt --key-id alias/app --in secret.txt --out secret.enc
//!     kmsctl decrypt --in secret.enc --out secret.txt
//! Endpoint and credentials: flags, else KMS_ENDPOINT / KMS_ACCESS_KEY_ID / KMS_ACCESS_KEY_SECRET
//! (and KMS_CA_FILE), else the sidecar's profile.json.

mod action_help;
mod action_name;
mod action_params;
mod args;
mod audit;
mod io;
mod listing;
mod output;

use clap::{CommandFactory, Parser};
use kms_client::client::{Client, ClientConfig, Overrides, Signing as Scheme};
use kms_client::exit::{Failure, EXIT_USAGE};
use kms_core::api::*;

use args::{Args, Cmd, FileIo, Signing};
use audit::audit;
use io::{read_input, write_output};
use output::{render, Output};
use serde_json::Value;

fn main() {
    kms_client::exit::end_quietly_on_closed_output();
    let args = parse_args();
    if let Err(e) = run(args) {
        eprintln!("kmsctl: {}", e.message);
        std::process::exit(e.code);
    }
}

/// The command line, with kmsctl's own options written after an API action's name
/// (`kmsctl DescribeKey --KeyId k --output table`) moved before it, where clap reads them.
fn parse_args() -> Args {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let args = Args::parse_from(&argv);
    let Cmd::Action(words) = &args.cmd else { return args };
    let globals: Vec<String> = Args::command()
        .get_arguments()
        .filter(|a| a.is_global_set())
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    let Some((action, rest)) = words.split_first() else { return args };
    let (own, params) = action_params::split_own_options(rest, &globals);
    if own.is_empty() {
        return args;
    }
    // The action's words are the end of the command line (clap hands over everything after it).
    let before = argv[..argv.len() - words.len()].iter().cloned();
    Args::parse_from(before.chain(own.into_iter().chain([action.clone()]).chain(params).map(Into::into)))
}

/// Exit codes: the shared table (`kms_client::exit`; README, "Exit codes").
fn run(args: Args) -> Result<(), Failure> {
    if let Cmd::Audit(cmd) = &args.cmd {
        return Ok(audit(cmd)?);
    }
    // Generated from the command line's own definition, so they never drift from it.
    match &args.cmd {
        Cmd::Completions { shell } => {
            clap_complete::generate(*shell, &mut Args::command(), "kmsctl", &mut std::io::stdout());
            return Ok(());
        }
        Cmd::Man => {
            clap_mangen::Man::new(Args::command())
                .render(&mut std::io::stdout())
                .map_err(|e| Failure::new(kms_client::exit::EXIT_OTHER, e))?;
            return Ok(());
        }
        Cmd::Actions => {
            print!("{}", action_help::all());
            return Ok(());
        }
        _ => {}
    }
    // The generic form is checked before anything else is needed (credentials, a reachable
    // KMS): a mistyped action is a usage error, `--help` answers from the action table, and
    // parameters the action does not read are warned about.
    let mut request = None;
    if let Cmd::Action(words) = &args.cmd {
        let (name, rest) = words.split_first().ok_or_else(|| Failure::new(EXIT_USAGE, "no action"))?;
        let action = action_name::parse(name).map_err(|e| Failure::new(EXIT_USAGE, e))?;
        if action_params::asks_for_help(rest) {
            print!("{}", action_help::action(action));
            return Ok(());
        }
        let params = action_params::parse(rest).map_err(|e| Failure::new(EXIT_USAGE, e))?;
        for warning in action_params::unknown(action, &params) {
            eprintln!("kmsctl: warning: {warning}");
        }
        request = Some((action, params));
    }
    let format = args.format;
    let print_json = |v: &Value| print!("{}", render(v, format.unwrap_or(Output::Json)));
    let mut cfg = ClientConfig::discover(Overrides {
        endpoint: args.endpoint,
        access_key_id: args.access_key_id,
        access_key_secret: args.access_key_secret,
        ca_file: args.ca_file,
        profile: args.profile,
        service: args.service,
    })?;
    cfg.signing = if args.signature_version == "v1" { Scheme::V1 } else { Scheme::V3 };
    let c = Client::new(cfg)?;
    let api = Failure::from;
    match args.cmd {
        Cmd::CreateKey { spec, description, rotate, alias } => {
            let md = c
                .create_key(&CreateKeyRequest {
                    key_spec: Some(spec),
                    description,
                    enable_automatic_rotation: rotate.as_ref().map(|_| true),
                    rotation_interval: rotate,
                    ..Default::default()
                })
                .map_err(api)?;
            if let Some(a) = alias {
                c.call_params(
                    "CreateAlias",
                    vec![("AliasName".into(), a), ("KeyId".into(), md.key_metadata.key_id.clone())],
                )
                .map_err(api)?;
            }
            print_json(&serde_json::to_value(md).unwrap());
        }
        Cmd::DescribeKey { key_id } => {
            print_json(&serde_json::to_value(c.describe_key(&key_id).map_err(api)?).unwrap())
        }
        Cmd::ListKeys => print_json(&listing::keys(&c).map_err(api)?),
        Cmd::ListAliases => print_json(&listing::aliases(&c).map_err(api)?),
        Cmd::Encrypt { key_id, io: FileIo { context, input, output } } => {
            let data = read_input(&input)?;
            let r = c
                .encrypt(&EncryptRequest {
                    key_id,
                    plaintext: SecretBytes::new(data),
                    encryption_context: context,
                    dry_run: false,
                })
                .map_err(api)?;
            write_output(&output, format!("{}\n", encode_base64(&r.ciphertext_blob)).as_bytes())?;
        }
        Cmd::Decrypt { io: FileIo { context, input, output } } => {
            let text =
                String::from_utf8(read_input(&input)?).map_err(|_| "the input is not a base64 ciphertext blob")?;
            let blob = decode_base64("CiphertextBlob", text.trim()).map_err(|e| e.message().to_string())?;
            let r = c
                .decrypt(&DecryptRequest { ciphertext_blob: blob, encryption_context: context, dry_run: false })
                .map_err(api)?;
            write_output(&output, r.plaintext.expose())?;
        }
        Cmd::GenerateDataKey { key_id, bytes, context } => {
            let r = c
                .generate_data_key(&GenerateDataKeyRequest {
                    key_id,
                    number_of_bytes: Some(bytes),
                    encryption_context: context,
                    ..Default::default()
                })
                .map_err(api)?;
            print_json(&serde_json::to_value(r).unwrap());
        }
        Cmd::GetPublicKey { key_id, version } => {
            let version = version_or_newest(&c, &key_id, version)?;
            let r: GetPublicKeyResponse =
                c.call("GetPublicKey", &KeyVersionRequest { key_id, key_version_id: version }).map_err(api)?;
            print!("{}", r.public_key);
        }
        Cmd::Sign { s: Signing { key_id, version, algorithm, input } } => {
            let version = version_or_newest(&c, &key_id, version)?;
            let digest = kms_core::crypto::asym::sha256(&read_input(&input)?);
            let r: AsymmetricSignResponse = c
                .call(
                    "AsymmetricSign",
                    &AsymmetricSignRequest { key_id, key_version_id: version, algorithm, digest, dry_run: false },
                )
                .map_err(api)?;
            println!("{}", encode_base64(&r.value));
        }
        Cmd::Verify { s: Signing { key_id, version, algorithm, input }, signature } => {
            let version = version_or_newest(&c, &key_id, version)?;
            let digest = kms_core::crypto::asym::sha256(&read_input(&input)?);
            let value = decode_base64("signature", &signature).map_err(|e| e.message().to_string())?;
            let r: AsymmetricVerifyResponse = c
                .call(
                    "AsymmetricVerify",
                    &AsymmetricVerifyRequest {
                        key_id,
                        key_version_id: version,
                        algorithm,
                        digest,
                        value,
                        dry_run: false,
                    },
                )
                .map_err(api)?;
            println!("{}", if r.value { "Verified OK" } else { "Verification failure" });
            if !r.value {
                std::process::exit(1);
            }
        }
        Cmd::ImportMaterial { key_id, input, expire_unix } => {
            let material = zeroize::Zeroizing::new(read_input(&input)?);
            let p: GetParametersForImportResponse = c
                .call(
                    "GetParametersForImport",
                    &GetParametersForImportRequest {
                        key_id: key_id.clone(),
                        wrapping_key_spec: "RSA_2048".into(),
                        wrapping_algorithm: "RSAES_OAEP_SHA_256".into(),
                    },
                )
                .map_err(api)?;
            let wrapped = kms_core::crypto::asym::encrypt_to_public(
                kms_core::model::KeySpec::Rsa2048,
                &p.public_key,
                kms_core::crypto::asym::AsymAlgorithm::RsaesOaepSha256,
                &material,
            )
            .map_err(|e| e.to_string())?;
            let _: Value = c
                .call(
                    "ImportKeyMaterial",
                    &ImportKeyMaterialRequest {
                        key_id,
                        encrypted_key_material: wrapped,
                        import_token: p.import_token,
                        key_material_expire_unix: Some(expire_unix),
                    },
                )
                .map_err(api)?;
            println!("imported");
        }
        Cmd::CreateSecret { name, input, key_id, version_id } => {
            let data = String::from_utf8(read_input(&input)?).map_err(|_| "the value is not UTF-8 text")?;
            let r: CreateSecretResponse = c
                .call(
                    "CreateSecret",
                    &CreateSecretRequest {
                        secret_name: name,
                        secret_data: SecretString::new(data),
                        version_id,
                        encryption_key_id: key_id,
                        ..Default::default()
                    },
                )
                .map_err(api)?;
            print_json(&serde_json::to_value(r).unwrap());
        }
        Cmd::GetSecret { name, stage, version_id } => {
            let r: GetSecretValueResponse = c
                .call(
                    "GetSecretValue",
                    &GetSecretValueRequest {
                        secret_name: name,
                        version_id,
                        version_stage: stage,
                        ..Default::default()
                    },
                )
                .map_err(api)?;
            write_output("-", r.secret_data.expose().as_bytes())?;
        }
        Cmd::PutSecret { name, version_id, input } => {
            let data = String::from_utf8(read_input(&input)?).map_err(|_| "the value is not UTF-8 text")?;
            let r: PutSecretValueResponse = c
                .call(
                    "PutSecretValue",
                    &PutSecretValueRequest {
                        secret_name: name,
                        version_id,
                        secret_data: SecretString::new(data),
                        ..Default::default()
                    },
                )
                .map_err(api)?;
            print_json(&serde_json::to_value(r).unwrap());
        }
        Cmd::RandomPassword { length, exclude } => {
            let r: GetRandomPasswordResponse = c
                .call(
                    "GetRandomPassword",
                    &GetRandomPasswordRequest {
                        password_length: Some(length),
                        exclude_characters: exclude,
                        ..Default::default()
                    },
                )
                .map_err(api)?;
            println!("{}", r.random_password.expose());
        }
        Cmd::GrantService { grantee, key_id } => {
            let req = ServiceKeyUseRequest { key_id, service: grantee };
            let _: serde_json::Value = c.call("GrantServiceKeyUse", &req).map_err(api)?;
            println!(
                "{} may now use {} for its data keys (GenerateDataKey, Decrypt, ReEncrypt)",
                req.service, req.key_id
            );
        }
        Cmd::RevokeService { grantee, key_id } => {
            let req = ServiceKeyUseRequest { key_id, service: grantee };
            let _: serde_json::Value = c.call("RevokeServiceKeyUse", &req).map_err(api)?;
            println!("{} may no longer use {}", req.service, req.key_id);
        }
        Cmd::Status => {
            c.ping().map_err(api)?;
            let page = c.call_params("ListKeys", vec![("PageSize".into(), "1".into())]).map_err(api)?;
            let (endpoint, key) = (&c.config().endpoint, &c.config().access_key_id);
            match format {
                None => println!("{endpoint}: up; signed requests served as {key} ({} keys)", page["TotalCount"]),
                Some(f) => print!(
                    "{}",
                    render(
                        &serde_json::json!({"Endpoint": endpoint, "Up": true, "AccessKeyId": key, "Keys": page["TotalCount"]}),
                        f
                    )
                ),
            }
        }
        Cmd::Audit(_) | Cmd::Completions { .. } | Cmd::Man | Cmd::Actions => {
            unreachable!("handled before connecting")
        }
        Cmd::Action(_) => {
            let (action, params) = request.ok_or("no action")?;
            print_json(&c.call_params(action.name(), params).map_err(api)?);
        }
    }
    Ok(())
}

/// The version `--version` names, else the key's newest: the last one created, as
/// ListKeyVersions lists them (an asymmetric key has no primary version to default to).
fn version_or_newest(c: &Client, key_id: &str, version: Option<String>) -> Result<String, Failure> {
    if let Some(v) = version {
        return Ok(v);
    }
    let mut newest: Option<(String, String)> = None;
    for page in 1u32.. {
        let params = [("KeyId", key_id.to_string()), ("PageSize", "100".into()), ("PageNumber", page.to_string())];
        let r = c.call_params("ListKeyVersions", params.map(|(k, v)| (k.to_string(), v)).to_vec())?;
        let versions = r["KeyVersions"]["KeyVersion"].as_array().cloned().unwrap_or_default();
        for v in &versions {
            let (created, id) = (v["CreationDate"].as_str().unwrap_or(""), v["KeyVersionId"].as_str().unwrap_or(""));
            // ISO-8601 UTC times order as strings; a tie goes to the one listed later.
            if newest.as_ref().is_none_or(|(c, _)| created >= c.as_str()) {
                newest = Some((created.to_string(), id.to_string()));
            }
        }
        if versions.is_empty() || u64::from(page) * 100 >= r["TotalCount"].as_u64().unwrap_or(0) {
            break;
        }
    }
    newest
        .map(|(_, id)| id)
        .ok_or_else(|| Failure::new(kms_client::exit::EXIT_OTHER, format!("key {key_id} has no versions")))
}
