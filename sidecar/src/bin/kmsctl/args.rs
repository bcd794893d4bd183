//! kmsctl's command line: global options, the verbs for people, the generic `<Action>` form and
//! `audit`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::output::Output;

#[derive(Parser, Debug)]
#[command(
    name = "kmsctl",
    version,
    about = "Talk to a local KMS (Alibaba Cloud KMS API)",
    allow_external_subcommands = true,
    after_help = "Any API action, as `aliyun kms` takes it: kmsctl <Action> --Param value … \
                  (kmsctl ListKeys --PageSize 20; kmsctl CreateKey --KeySpec EC_P256 --KeyUsage SIGN/VERIFY); \
                  kmsctl <Action> --help lists its parameters, kmsctl actions lists every action. \
                  Exit codes: 0 ok; 1 other failure; 2 usage; 4 the KMS refused; 5 the KMS is unreachable."
)]
pub struct Args {
    /// http://host:port or https://host:port (default: KMS_ENDPOINT, then the profile).
    #[arg(long, global = true, help_heading = "Connection")]
    pub endpoint: Option<String>,
    /// CA certificate (PEM) to trust for https (default: KMS_CA_FILE, then the profile).
    #[arg(long, global = true, help_heading = "Connection")]
    pub ca_file: Option<PathBuf>,
    /// The sidecar's profile.json (default: KMS_PROFILE, then in its data dir).
    #[arg(long, global = true, help_heading = "Connection")]
    pub profile: Option<PathBuf>,
    /// Sign as this access key (default: KMS_ACCESS_KEY_ID, then the profile's owner key).
    #[arg(long, global = true, help_heading = "Credentials")]
    pub access_key_id: Option<String>,
    /// Its secret (default: KMS_ACCESS_KEY_SECRET, then the profile).
    #[arg(long, global = true, help_heading = "Credentials")]
    pub access_key_secret: Option<String>,
    /// Act as a service principal from the profile (oss, ecs).
    #[arg(long, global = true, help_heading = "Credentials")]
    pub service: Option<String>,
    /// Request signature scheme: v3 (ACS3-HMAC-SHA256, what current SDKs send) or v1 (the RPC
    /// HMAC-SHA1 form older SDKs send). Not `verify --signature`, the signature to check.
    #[arg(long, global = true, default_value = "v3", value_parser = ["v1", "v3"], help_heading = "Credentials")]
    pub signature_version: String,
    /// How answers are printed: json (the API's answer, the default), table (lists as rows,
    /// objects as field/value), text (the table's rows tab-separated, for scripts). Commands that
    /// write data as it is (decrypt, get-secret, get-public-key, sign, …) ignore it.
    #[arg(
        long = "output",
        value_name = "FORMAT",
        global = true,
        value_enum,
        env = "KMSCTL_OUTPUT",
        help_heading = "Output"
    )]
    pub format: Option<Output>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a symmetric key (and optionally an alias for it).
    CreateKey {
        /// Aliyun_AES_256 or Aliyun_SM4 (other specs: `kmsctl CreateKey --KeySpec …`).
        #[arg(long, default_value = "Aliyun_AES_256")]
        spec: String,
        /// Free text shown with the key.
        #[arg(long)]
        description: Option<String>,
        /// Rotate automatically at this interval (e.g. 365d).
        #[arg(long)]
        rotate: Option<String>,
        /// An alias for the new key (alias/…).
        #[arg(long)]
        alias: Option<String>,
    },
    /// A key's metadata.
    DescribeKey {
        /// Key id, alias or ARN.
        key_id: String,
    },
    /// Every key with its aliases, spec, usage, state, protection level, creation and next
    /// rotation (one DescribeKey per key; `--output table` for a table).
    ListKeys,
    /// Every alias and the key it points to.
    ListAliases,
    /// Encrypt a file (at most 6 KiB; use generate-data-key for more) into a base64 ciphertext blob.
    Encrypt {
        /// The key: id, alias (alias/…) or ARN.
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
        /// The key: id, alias (alias/…) or ARN.
        #[arg(long)]
        key_id: String,
        /// Length of the data key in bytes (1–1024).
        #[arg(long, default_value_t = 32)]
        bytes: i64,
        /// JSON object bound to the wrapped key (EncryptionContext).
        #[arg(long)]
        context: Option<String>,
    },
    /// The public key (PEM) of an asymmetric key version.
    GetPublicKey {
        /// The key: id, alias (alias/…) or ARN.
        #[arg(long)]
        key_id: String,
        /// The key version (default: the newest – asymmetric keys have no primary version).
        #[arg(long)]
        version: Option<String>,
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
        /// The key: id, alias (alias/…) or ARN.
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
    /// Let a cloud service (oss for kmsfs, ecs for blockcrypt) use one of your keys for its data
    /// keys – the RAM service-role step (GrantServiceKeyUse); kept with the key, in the store.
    GrantService {
        /// The service, as its principal names it: oss, ecs, … (not the global `--service`,
        /// which is whom kmsctl signs as).
        #[arg(value_name = "SERVICE")]
        grantee: String,
        /// The key: id, alias (alias/…) or ARN.
        #[arg(long)]
        key_id: String,
    },
    /// End a grant (RevokeServiceKeyUse): volumes and disks under the key stop opening.
    RevokeService {
        #[arg(value_name = "SERVICE")]
        grantee: String,
        /// The key: id, alias (alias/…) or ARN.
        #[arg(long)]
        key_id: String,
    },
    /// Whether the KMS is up (`/ping`) and serves signed requests from its store (ListKeys):
    /// exit 0, 5 when it cannot be reached, 4 when it refuses the credentials. A readiness probe.
    Status,
    /// The audit trail: verify its hash chain, or query it.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell), e.g.
    /// `kmsctl completions bash > /etc/bash_completion.d/kmsctl`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `kmsctl man > /usr/local/share/man/man1/kmsctl.1`.
    Man,
    /// Every API action kmsctl can send as `kmsctl <Action> --Param value …`.
    Actions,
    #[command(external_subcommand)]
    Action(Vec<String>),
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
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
        /// The audit dir (default: <data-dir>/audit).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// ISO-8601 UTC, e.g. 2026-01-01T00:00:00Z.
        #[arg(long)]
        since: Option<String>,
        /// ISO-8601 UTC, exclusive.
        #[arg(long)]
        until: Option<String>,
        /// owner, user:<name>, service:<name>.
        #[arg(long)]
        principal: Option<String>,
        /// An API action (Encrypt, CreateKey, …).
        #[arg(long)]
        action: Option<String>,
        /// A key id, alias or secret name appearing in the event's resources.
        #[arg(long)]
        key: Option<String>,
    },
}

/// The key version, algorithm and file a signature is about.
#[derive(clap::Args, Debug)]
pub struct Signing {
    /// The key: id, alias (alias/…) or ARN.
    #[arg(long)]
    pub key_id: String,
    /// The key version (default: the newest – asymmetric keys have no primary version).
    #[arg(long)]
    pub version: Option<String>,
    /// RSA_PSS_SHA_256, RSA_PKCS1_SHA_256 or ECDSA_SHA_256.
    #[arg(long)]
    pub algorithm: String,
    /// The signed file, - for stdin.
    #[arg(long = "in", default_value = "-")]
    pub input: String,
}

/// What encrypt and decrypt read and write, and the context bound to the ciphertext.
#[derive(clap::Args, Debug)]
pub struct FileIo {
    /// JSON object bound to the ciphertext; needed again to decrypt.
    #[arg(long)]
    pub context: Option<String>,
    /// Input file, - for stdin.
    #[arg(long = "in", default_value = "-")]
    pub input: String,
    /// Output file, - for stdout.
    #[arg(long = "out", default_value = "-")]
    pub output: String,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks (ids used twice – a global option and a subcommand's –,
    /// conflicting shorts, …), which otherwise fire only when a user hits them.
    #[test]
    fn the_command_line_is_consistent() {
        super::Args::command().debug_assert();
    }

    /// A subcommand argument with a global option's id makes clap panic at parse time (it
    /// happened: `--out` of encrypt was `output`, like `--output`); debug_assert misses it.
    #[test]
    fn no_subcommand_argument_shadows_a_global_option() {
        fn walk(cmd: &clap::Command, globals: &[clap::Id]) {
            for sub in cmd.get_subcommands() {
                for a in sub.get_arguments().filter(|a| !a.is_global_set()) {
                    assert!(!globals.contains(a.get_id()), "{} {} shadows a global option", sub.get_name(), a.get_id());
                }
                walk(sub, globals);
            }
        }
        let cmd = super::Args::command();
        let globals: Vec<clap::Id> =
            cmd.get_arguments().filter(|a| a.is_global_set()).map(|a| a.get_id().clone()).collect();
        assert!(globals.len() >= 8);
        walk(&cmd, &globals);
    }
}
