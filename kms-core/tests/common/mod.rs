//! A SoftHSM2 token in a temporary directory, for the tests that need a real PKCS#11 token.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use kms_core::clock::Clock;
use kms_core::crypto::seal::SoftwareRootKey;
use kms_core::crypto::token::{Token, TokenConfig};
use kms_core::{Engine, EngineConfig, EngineOptions, Limits};
use zeroize::Zeroizing;

pub const LABEL: &str = "kms-test";
pub const PIN: &str = "87654321";

/// Initialises a token under `dir`; `None` when `KMS_SKIP_HSM_TESTS=1`.
pub fn softhsm(dir: &Path) -> Option<PathBuf> {
    if std::env::var("KMS_SKIP_HSM_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("KMS_SKIP_HSM_TESTS=1: skipped");
        return None;
    }
    let hsm = kms_core::crypto::softhsm::SoftHsm::init(dir, LABEL, PIN)
        .expect("a SoftHSM2 token: run `bash .ci/setup` (or set KMS_SKIP_HSM_TESTS=1)");
    // SoftHSM reads its configuration when the module initialises; each test binary that uses
    // this has a single test, so the variable affects nothing else.
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    Some(hsm.module)
}

/// The test token, logged in.
pub fn open_token(module: &Path) -> Arc<Token> {
    Token::open(&TokenConfig {
        module: module.to_path_buf(),
        token_label: LABEL.into(),
        slot: None,
        pin: Zeroizing::new(PIN.into()),
    })
    .unwrap()
}

/// An engine on `dir` (software root key) whose HSM keys live in `token`; manual key versions are
/// allowed back to back.
pub fn hsm_engine(dir: &Path, token: Arc<Token>, clock: Arc<dyn Clock>) -> Engine {
    Engine::open(EngineOptions {
        config: EngineConfig {
            limits: Limits { min_manual_version_interval_secs: 0, ..Default::default() },
            ..Default::default()
        },
        store: kms_core::StoreLocation::Sqlite(dir.join("kms.db")),
        node_id: "local".into(),
        store_lease: kms_core::engine::DEFAULT_STORE_LEASE,
        protector: Arc::new(SoftwareRootKey::load_or_create(&dir.join("root.key")).unwrap()),
        clock,
        token: Some(token),
    })
    .unwrap()
}

/// `pkcs11-tool --list-objects` for secret keys.
pub fn list_secret_keys(module: &Path) -> String {
    list_objects(module, "secrkey")
}

/// `pkcs11-tool --list-objects --type kind` (`secrkey`, `privkey`, `pubkey`).
pub fn list_objects(module: &Path, kind: &str) -> String {
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(module)
        .args(["--token-label", LABEL, "--login", "--pin", PIN, "--list-objects", "--type", kind])
        .output()
        .expect("pkcs11-tool (opensc)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `C_CloseAllSessions` on every slot (SoftHSM2 adds a free one), through the module this process already initialised.
pub fn close_all_sessions(module: &std::path::Path) {
    // SAFETY: `Pkcs11::new` dlopens the same SoftHSM2 library the engine uses (the loader returns
    // the loaded instance, already initialised). The slot list calls get the count, then fill a
    // buffer of exactly that many entries; C_CloseAllSessions takes a plain slot id. No pointer
    // outlives the call it is passed to.
    unsafe {
        let lib = cryptoki_sys::Pkcs11::new(module).unwrap();
        let mut n: cryptoki_sys::CK_ULONG = 0;
        assert_eq!(lib.C_GetSlotList(cryptoki_sys::CK_TRUE, std::ptr::null_mut(), &mut n), cryptoki_sys::CKR_OK);
        let mut slots = vec![0 as cryptoki_sys::CK_SLOT_ID; n as usize];
        assert_eq!(lib.C_GetSlotList(cryptoki_sys::CK_TRUE, slots.as_mut_ptr(), &mut n), cryptoki_sys::CKR_OK);
        for slot in slots {
            assert_eq!(lib.C_CloseAllSessions(slot), cryptoki_sys::CKR_OK);
        }
    }
}
