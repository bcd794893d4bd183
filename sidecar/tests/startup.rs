//! A sidecar that cannot start says why and exits with the code of the kind of problem (README,
//! "Exit codes"): 2 for the configuration, 4 when the root key does not open the store, 5 when
//! the store's server cannot be reached, 6 when the store or an address is another process's.

mod common;

use common::{start_fails, Sidecar};
use kms_e2e::sidecar::install_root_key;

#[test]
fn each_kind_of_start_failure_has_its_exit_code() {
    let fresh = || tempfile::tempdir().unwrap();

    // The configuration: a file that is not TOML, a store URL of no known kind.
    let dir = fresh();
    let cfg = dir.path().join("kms.toml");
    std::fs::write(&cfg, "listen = [").unwrap();
    let (code, err) = start_fails(dir.path(), &["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    let (code, err) = start_fails(fresh().path(), &["--store", "mysql://db/kms"], &[]);
    assert_eq!(code, 2, "{err}");

    // A PostgreSQL store where nothing listens: unreachable, and the message says where.
    let (code, err) = start_fails(fresh().path(), &["--store", "postgres://kms@127.0.0.1:9/kms"], &[]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("127.0.0.1") && err.contains("PostgreSQL"), "{err}");

    // The store and the address of a running sidecar are its own.
    let running = Sidecar::start();
    let (code, err) = start_fails(running.dir.path(), &[], &[]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("in use by another process"), "{err}");
    let (code, err) = start_fails(fresh().path(), &["--tls-listen", &running.http], &[]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains(&running.http), "{err}");

    // Another store's root key: refused, and nothing about the key is printed.
    let other = Sidecar::start();
    let other_key = other.root_key();
    let data = running.stop();
    std::fs::remove_file(data.path().join("root.key")).unwrap();
    install_root_key(&data, &other_key);
    let (code, err) = start_fails(data.path(), &[], &[]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("sealed under another root key"), "{err}");
}

#[test]
fn every_program_logs_the_same_way_and_the_sidecar_warns_about_exposure() {
    use std::time::{Duration, Instant};
    // --log-file (0600), and the two warnings: plain HTTP on a non-loopback address, an agent
    // that reads as the owner.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sidecar.log");
    let mut child = std::process::Command::new(kms_e2e::bin("kms-sidecar"))
        .args(["--data-dir", dir.path().join("data").to_str().unwrap(), "--listen", "0.0.0.0:0"])
        .args(["--agent-listen", "127.0.0.1:0", "--log-level", "warn", "--log-file", log.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("non-loopback") && text.contains("reads as the owner") {
            break text;
        }
        assert!(Instant::now() < deadline, "no warnings in the log file: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(!text.contains("Some("), "no Debug renderings: {text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);

    // A --log-level that does not parse is a usage error, in every program.
    for program in ["kms-sidecar", "kmsfs", "blockcrypt"] {
        let args: &[&str] = match program {
            "kms-sidecar" => &["--log-level", "loud[", "--data-dir", "/nonexistent/kms"],
            "kmsfs" => &["--log-level", "loud[", "info", "/nonexistent"],
            _ => &["--log-level", "loud[", "info", "/nonexistent.img"],
        };
        let out = kms_e2e::run(program, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{program}: {err}");
        assert!(err.contains("--log-level \"loud[\""), "{program}: {err}");
    }
}
