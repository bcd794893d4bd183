//! A SoftHSM2 token in a directory of its own, for tests, benchmarks and trying the HSM
//! protection level without hardware: `softhsm2-util --init-token` under a private
//! `SOFTHSM2_CONF`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// An initialised token: its module and the configuration file to point `SOFTHSM2_CONF` at.
pub struct SoftHsm {
    pub module: PathBuf,
    pub conf: PathBuf,
}

impl SoftHsm {
    /// Initialises a token labelled `label` with user PIN `pin` in `dir/tokens`.
    pub fn init(dir: &Path, label: &str, pin: &str) -> Result<SoftHsm, String> {
        let module =
            super::token::default_softhsm_module().ok_or("SoftHSM2 is not installed (apt install softhsm2)")?;
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(|e| format!("{}: {e}", tokens.display()))?;
        let conf = dir.join("softhsm2.conf");
        let text =
            format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display());
        std::fs::write(&conf, text).map_err(|e| format!("{}: {e}", conf.display()))?;
        // An SO PIN nobody needs again: random, never shown.
        let so_pin = uuid::Uuid::new_v4().simple().to_string();
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", label, "--so-pin", &so_pin, "--pin", pin])
            .output()
            .map_err(|e| format!("softhsm2-util: {e}"))?;
        if !out.status.success() {
            return Err(format!("softhsm2-util --init-token: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(SoftHsm { module, conf })
    }
}
