//! Real applications inside a mount: git (many small files, renames, fsync, mmap of packs) and
//! SQLite (fcntl locks, fsync, a WAL journal with a shared-memory mmap).

mod common;

use std::process::Command;

fn run(dir: &std::path::Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn git_init_commit_log_gc_fsck() {
    let mut m = common::Mount::new();
    let repo = m.mnt.join("repo");
    std::fs::create_dir(&repo).unwrap();
    run(&repo, "git", &["init", "-q", "-b", "main"]);
    for i in 0..3 {
        for f in 0..20 {
            std::fs::write(repo.join(format!("file{f}.txt")), format!("commit {i} file {f}\n").repeat(50)).unwrap();
        }
        run(&repo, "git", &["add", "-A"]);
        run(&repo, "git", &["commit", "-q", "-m", &format!("commit {i}")]);
    }
    run(&repo, "git", &["mv", "file0.txt", "renamed.txt"]);
    run(&repo, "git", &["commit", "-q", "-m", "rename"]);
    run(&repo, "git", &["gc", "-q"]);
    m.remount();
    let repo = m.mnt.join("repo");
    let log = run(&repo, "git", &["log", "--oneline"]);
    assert_eq!(log.lines().count(), 4, "{log}");
    assert!(log.contains("rename"));
    run(&repo, "git", &["fsck", "--full", "--strict"]);
    assert_eq!(run(&repo, "git", &["status", "--porcelain"]), "");
}

#[test]
fn sqlite_wal_database() {
    let mut m = common::Mount::new();
    let db = m.mnt.join("app.db");
    let script = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("pragma journal_mode=wal")
db.execute("pragma synchronous=full")
db.execute("create table if not exists t(id integer primary key, v text)")
for i in range(2000):
    db.execute("insert into t(v) values (?)", ("x" * (i % 300),))
    if i % 100 == 0:
        db.commit()
db.commit()
db.execute("delete from t where id % 3 = 0")
db.commit()
assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
print(db.execute("select count(*), sum(length(v)) from t").fetchone())
"#;
    let first = run(&m.mnt, "python3", &["-c", script, db.to_str().unwrap()]);
    m.remount();
    let again = run(&m.mnt, "python3", &["-c", script, m.mnt.join("app.db").to_str().unwrap()]);
    // The same on a plain directory gives the same answers.
    let plain_db = m.plain.join("app.db");
    let plain: Vec<String> =
        (0..2).map(|_| run(&m.plain, "python3", &["-c", script, plain_db.to_str().unwrap()])).collect();
    assert_eq!([first, again], [plain[0].clone(), plain[1].clone()]);
}
