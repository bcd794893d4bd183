//! A consistent copy of a SQLite store taken while its owner keeps writing – what `kms-sidecar
//! backup` is built on – and the check a copy gets before it is trusted again.
//!
//! The copy is one read transaction's snapshot (`VACUUM INTO` on a read-only connection, which
//! takes no lock the writer waits for): every change committed before the snapshot began is in
//! it, none after, and none half. What it holds is still sealed under the root key – the copy
//! adds no plaintext to the disk.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// Writes a snapshot of the store `src` to `dest`, a new file made 0600 and synced to disk.
pub fn copy_sqlite(src: &Path, dest: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    if !src.is_file() {
        return Err(StoreError(format!("{}: no such store", src.display())));
    }
    let at = |p: &Path, e: &dyn std::fmt::Display| StoreError(format!("{}: {e}", p.display()));
    // Made here so that its mode is ours (SQLite would create it with the umask's); VACUUM INTO
    // accepts an empty file. `create_new`: a copy never replaces anything.
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dest).map_err(|e| at(dest, &e))?;
    let conn = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| at(src, &e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| at(src, &e))?;
    let dest_text = dest.to_str().ok_or_else(|| StoreError(format!("{}: not a UTF-8 path", dest.display())))?;
    conn.execute("VACUUM INTO ?1", [dest_text]).map_err(|e| at(src, &e))?;
    drop(conn);
    std::fs::File::open(dest).and_then(|f| f.sync_all()).map_err(|e| at(dest, &e))?;
    check_sqlite(dest)
}

/// Whether the file at `path` is a whole, undamaged SQLite store (`PRAGMA integrity_check`).
pub fn check_sqlite(path: &Path) -> Result<(), StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
    if verdict != "ok" {
        return Err(StoreError(format!("{}: the store is damaged: {verdict}", path.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[test]
    fn a_copy_beside_an_open_writer_is_whole_private_and_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("kms.db");
        let mut store = SqliteStore::open(&src).unwrap();
        store.put_meta("x", b"before the copy").unwrap();
        let dest = dir.path().join("copy.db");
        copy_sqlite(&src, &dest).unwrap();
        store.put_meta("x", b"after the copy").unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600);
        drop(store);
        let copy = SqliteStore::open(&dest).unwrap();
        assert_eq!(copy.get_meta("x").unwrap().as_deref(), Some(&b"before the copy"[..]));
        drop(copy);
        assert!(copy_sqlite(&src, &dest).unwrap_err().0.contains("exists"), "an existing file is kept");
        assert!(copy_sqlite(&dir.path().join("none.db"), &dir.path().join("c2")).unwrap_err().0.contains("no such"));
    }

    #[test]
    fn a_damaged_file_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        drop(SqliteStore::open(&path).unwrap());
        check_sqlite(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n / 2..].fill(0xa5);
        std::fs::write(&path, bytes).unwrap();
        assert!(check_sqlite(&path).is_err());
    }
}
