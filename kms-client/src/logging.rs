//! One way to log for every program (kms-sidecar, kmsfs, blockcrypt): `--log-level` – a level
//! (`error`, `warn`, `info`, `debug`, `trace`) or a filter in `RUST_LOG` syntax
//! (`warn,kmsfs=debug`) – else `RUST_LOG`, else the tool's own variable (`KMS_LOG`, `KMSFS_LOG`,
//! `BLOCKCRYPT_LOG`, kept for existing setups), else the tool's default; `--log-file` appends
//! there (created 0600: log lines name keys and paths) instead of writing to stderr.

use std::fs::File;
use std::path::PathBuf;

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

/// The logging flags every program takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// Log level or filter: error, warn, info, debug, trace, or RUST_LOG syntax
    /// (warn,kmsfs=debug). Default: RUST_LOG, then the tool's own variable, then its default.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Append log lines to this file (created 0600) instead of stderr.
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

impl LogArgs {
    /// The filter, by the precedence above; a `--log-level` that does not parse is an error
    /// naming it (a variable that does not parse falls through, as `RUST_LOG` conventionally does).
    pub fn filter(&self, tool_env: &str, default: &str) -> Result<EnvFilter, String> {
        if let Some(l) = &self.log_level {
            return EnvFilter::try_new(l).map_err(|e| format!("--log-level {l:?}: {e}"));
        }
        Ok(["RUST_LOG", tool_env]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .find_map(|v| EnvFilter::try_new(v).ok())
            .unwrap_or_else(|| EnvFilter::new(default)))
    }

    /// The `--log-file`, opened for appending (0600), if one was given.
    pub fn file(&self) -> Result<Option<File>, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let Some(p) = &self.log_file else { return Ok(None) };
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(p)
            .map(Some)
            .map_err(|e| format!("--log-file {}: {e}", p.display()))
    }

    /// Installs the subscriber: the filter, and the log file or stderr (colours only on a
    /// terminal). `fallback` is where lines go without a `--log-file` (stderr if `None`).
    pub fn init(&self, tool_env: &str, default: &str, fallback: Option<BoxMakeWriter>) -> Result<(), String> {
        let filter = self.filter(tool_env, default)?;
        let (writer, ansi) = match (self.file()?, fallback) {
            (Some(f), _) => (BoxMakeWriter::new(std::sync::Mutex::new(f)), false),
            (None, Some(w)) => (w, false),
            (None, None) => (BoxMakeWriter::new(std::io::stderr), std::io::IsTerminal::is_terminal(&std::io::stderr())),
        };
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi).with_target(false).init();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_level_is_named_and_a_file_is_private() {
        let bad = LogArgs { log_level: Some("loud[".into()), log_file: None };
        assert!(bad.filter("X_LOG", "info").unwrap_err().contains("--log-level \"loud[\""));
        let ok = LogArgs { log_level: Some("warn,kmsfs=debug".into()), log_file: None };
        assert!(ok.filter("X_LOG", "info").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let args = LogArgs { log_level: None, log_file: Some(dir.path().join("x.log")) };
        args.file().unwrap().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("x.log")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let nowhere = LogArgs { log_level: None, log_file: Some(dir.path().join("no/such/dir/x.log")) };
        assert!(nowhere.file().unwrap_err().contains("no/such/dir"));
    }
}
