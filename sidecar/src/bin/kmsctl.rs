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

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kms_client::client::{Client, ClientConfig, Overrides, Signing as Scheme};
use kms_client::exit::Failure;
use kms_core::api::*;
use serde_json::Value;

#[derive(Parser, Debug)]
#[command(
    name = "kmsctl",
    version,
    about = "Talk to a local KMS (Alibaba Cloud KMS API)",
    allow_external_subcommands = true
)]
struct Args {
    /// http://host:port or https://host:port
    #[arg(long, global = true)]
    endpoint: Option<String>,
    #[arg(long, global = true)]
    access_key_id: Option<String>,
    #[arg(long, global = true)]
    access_key_secret: Option<String>,
    /// CA certificate (PEM) to trust for https.
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    /// The sidecar's profile.json (default: in its data dir).
    #[arg(long, global = true)]
    profile: Option<PathBuf>,
    /// Act as a service principal from the profile (oss, ecs).
    #[arg(long, global = true)]
    service: Option<String>,
    /// Signature scheme.
    #[arg(long, global = true, default_value = "v3", value_parser = ["v1", "v3"])]
    signature: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a symmetric key (and optionally an alias for it).
    CreateKey {
        #[arg(long, default_value = "Aliyun_AES_256")]
        spec: String,
        #[arg(long)]
        description: Option<String>,
        /// Rotate automatically at this interval (e.g. 365d).
        #[arg(long)]
        rotate: Option<String>,
        #[arg(long)]
        alias: Option<String>,
    },
    DescribeKey {
        key_id: String,
    },
    ListKeys,
    ListAliases,
    /// Encrypt a file (at most 6 KiB; use generate-data-key for more) into a base64 ciphertext blob.
    Encrypt {
        #[arg(long)]
        key_id: String,
        #[command(flatten)]
        io: FileIo,
    },
    /// Decrypt a ciphertext blob written by encrypt.
    Decrypt {
        #[command(flatten)]
        io: FileIo,
    },
    /// A new data key: plaintext and ciphertext, base64, as JSON.
    GenerateDataKey {
        #[arg(long)]
        key_id: String,
        #[arg(long, default_value_t = 32)]
        bytes: i64,
        #[arg(long)]
        context: Option<String>,
    },
    /// The public key (PEM) of an asymmetric key version.
    GetPublicKey {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        version: String,
    },
    /// Sign the SHA-256 digest of a file (RSA and EC keys); prints the base64 signature.
    Sign {
        #[command(flatten)]
        s: Signing,
    },
    /// Verify a base64 signature over the SHA-256 digest of a file; exit 1 if it does not verify.
    Verify {
        #[command(flatten)]
        s: Signing,
        #[arg(long)]
        signature: String,
    },
    /// BYOK in one step: fetch an import token, wrap the material (RSA_2048, RSAES_OAEP_SHA_256)
    /// here, import it.
    ImportMaterial {
        #[arg(long)]
        key_id: String,
        /// The raw key material (32 bytes for Aliyun_AES_256, 16 for Aliyun_SM4).
        #[arg(long = "in")]
        input: String,
        /// Unix time at which the material expires; 0 = never.
        #[arg(long, default_value_t = 0)]
        expire_unix: i64,
    },
    /// Create a secret from a file (first version v1, stage ACSCurrent).
    CreateSecret {
        name: String,
        #[arg(long = "in", default_value = "-")]
        input: String,
        /// CMK to protect it (default: the secrets service key).
        #[arg(long)]
        key_id: Option<String>,
        #[arg(long, default_value = "v1")]
        version_id: String,
    },
    /// Print a secret's value (ACSCurrent unless a stage or version is named).
    GetSecret {
        name: String,
        #[arg(long)]
        stage: Option<String>,
        #[arg(long)]
        version_id: Option<String>,
    },
    /// Store a new version from a file; it becomes ACSCurrent.
    PutSecret {
        name: String,
        #[arg(long)]
        version_id: String,
        #[arg(long = "in", default_value = "-")]
        input: String,
    },
    /// A random password from the KMS.
    RandomPassword {
        #[arg(long, default_value_t = 32)]
        length: i64,
        #[arg(long)]
        exclude: Option<String>,
    },
    /// The audit trail: verify its hash chain, or query it.
    #[command(subcommand)]
    Audit(AuditCmd),
    #[command(external_subcommand)]
    Action(Vec<String>),
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Check every line's MAC and place in the chain, and the end of the log against the
    /// store's anchor; list every missing or altered event. Needs the store and its root key
    /// (run it as the sidecar's user); works while the sidecar runs.
    Verify {
        /// The sidecar's config file: its data dir, audit dir and HSM settings.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The sidecar's data dir (default: the config's, else the default data dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The audit dir (default: the config's, else <data-dir>/audit).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Accept a log whose oldest files were removed (retention); the rest is still checked.
        #[arg(long)]
        allow_pruned: bool,
    },
    /// Print matching events as JSON lines.
    Query {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// ISO-8601 UTC, e.g. 2026-01-01T00:00:00Z.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// owner, user:<name>, service:<name>.
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        action: Option<String>,
        /// A key id, alias or secret name appearing in the event's resources.
        #[arg(long)]
        key: Option<String>,
    },
}

/// The key version, algorithm and file a signature is about.
#[derive(clap::Args, Debug)]
struct Signing {
    #[arg(long)]
    key_id: String,
    #[arg(long)]
    version: String,
    /// RSA_PSS_SHA_256, RSA_PKCS1_SHA_256 or ECDSA_SHA_256.
    #[arg(long)]
    algorithm: String,
    #[arg(long = "in", default_value = "-")]
    input: String,
}

/// What encrypt and decrypt read and write, and the context bound to the ciphertext.
#[derive(clap::Args, Debug)]
struct FileIo {
    /// JSON object bound to the ciphertext; needed again to decrypt.
    #[arg(long)]
    context: Option<String>,
    /// Input file, - for stdin.
    #[arg(long = "in", default_value = "-")]
    input: String,
    /// Output file, - for stdout.
    #[arg(long = "out", default_value = "-")]
    output: String,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("kmsctl: {}", e.message);
        std::process::exit(e.code);
    }
}

/// Exit codes: the shared table (`kms_client::exit`; README, "Exit codes").
fn run(args: Args) -> Result<(), Failure> {
    if let Cmd::Audit(cmd) = &args.cmd {
        return Ok(audit(cmd)?);
    }
    let mut cfg = ClientConfig::discover(Overrides {
        endpoint: args.endpoint,
        access_key_id: args.access_key_id,
        access_key_secret: args.access_key_secret,
        ca_file: args.ca_file,
        profile: args.profile,
        service: args.service,
    })?;
    cfg.signing = if args.signature == "v1" { Scheme::V1 } else { Scheme::V3 };
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
        Cmd::ListKeys => print_json(&c.call_params("ListKeys", vec![("PageSize".into(), "100".into())]).map_err(api)?),
        Cmd::ListAliases => {
            print_json(&c.call_params("ListAliases", vec![("PageSize".into(), "100".into())]).map_err(api)?)
        }
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
            let r: GetPublicKeyResponse =
                c.call("GetPublicKey", &KeyVersionRequest { key_id, key_version_id: version }).map_err(api)?;
            print!("{}", r.public_key);
        }
        Cmd::Sign { s: Signing { key_id, version, algorithm, input } } => {
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
        Cmd::Audit(_) => unreachable!("handled before connecting"),
        Cmd::Action(words) => {
            let (action, rest) = words.split_first().ok_or("no action")?;
            print_json(&c.call_params(action, parse_action_params(rest)?).map_err(api)?);
        }
    }
    Ok(())
}

/// `--Name value` or `--Name=value` pairs.
fn parse_action_params(words: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let name = w.strip_prefix("--").ok_or_else(|| format!("expected --Name value, got {w:?}"))?;
        match name.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => {
                let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                out.push((name.to_string(), v.clone()));
            }
        }
    }
    Ok(out)
}

fn read_input(path: &str) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    if path == "-" {
        std::io::stdin().read_to_end(&mut buf).map_err(|e| e.to_string())?;
    } else {
        buf = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(buf)
}

fn write_output(path: &str, data: &[u8]) -> Result<(), String> {
    if path == "-" {
        std::io::stdout().write_all(data).map_err(|e| e.to_string())
    } else {
        std::fs::write(path, data).map_err(|e| format!("{path}: {e}"))
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap());
}

fn audit(cmd: &AuditCmd) -> Result<(), String> {
    use kms_sidecar::audit;
    let default_dir = || kms_sidecar::config::default_data_dir().join("audit");
    match cmd {
        AuditCmd::Verify { config, data_dir, dir, allow_pruned } => {
            let mut cfg = match config {
                Some(p) => kms_sidecar::config::Config::load(p)?,
                None => kms_sidecar::config::Config::default(),
            };
            if let Some(d) = data_dir {
                cfg.data_dir = Some(d.clone());
            }
            if let Some(d) = dir {
                cfg.audit.dir = Some(d.clone());
            }
            let r = audit::verify_configured(&cfg, *allow_pruned)?;
            for f in &r.findings {
                println!("{f}");
            }
            let anchored = match r.anchored_seq {
                Some(a) => format!("anchored at seq {a}, {} newer events not yet anchored", r.unanchored),
                None => "never anchored".into(),
            };
            let pruned = r.pruned_before.map(|p| format!("; events before {p} pruned")).unwrap_or_default();
            let legacy = match r.legacy_events {
                0 => String::new(),
                n => format!("; {n} events from before lines were keyed (hash-chained only)"),
            };
            let summary = format!(
                "{} events in {} files; head seq {} mac {}; {anchored}{pruned}{legacy}",
                r.events, r.files, r.last_seq, r.last_mac
            );
            if r.ok() {
                println!("audit log OK: {summary}");
                Ok(())
            } else {
                Err(format!("audit log BROKEN: {} findings; {summary}", r.findings.len()))
            }
        }
        AuditCmd::Query { dir, since, until, principal, action, key } => {
            let dir = dir.clone().unwrap_or_else(default_dir);
            let q = audit::Query {
                since: since.clone(),
                until: until.clone(),
                principal: principal.clone(),
                action: action.clone(),
                resource: key.clone(),
            };
            for e in audit::query(&dir, &q)? {
                println!("{}", serde_json::to_string(&e).unwrap());
            }
            Ok(())
        }
    }
}
