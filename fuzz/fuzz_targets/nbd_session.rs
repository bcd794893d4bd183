//! A whole NBD client session against `blockcrypt serve`'s server: the fixed-newstyle handshake
//! and its options (LIST, INFO, GO, STRUCTURED_REPLY, SET_META_CONTEXT, STARTTLS, ABORT, …),
//! then transmission requests (READ, WRITE, TRIM, WRITE_ZEROES, BLOCK_STATUS, FLUSH, DISC) on a
//! real encrypted 1 MiB disk. Input: the bytes the client sends; what the server answers is
//! discarded.
#![no_main]
use std::sync::{Arc, OnceLock};

use blockcrypt::disk::Disk;
use blockcrypt::nbd::{Export, Server};
use blockcrypt::xts::{Algorithm, SectorCipher};
use libfuzzer_sys::fuzz_target;

struct Rig {
    rt: tokio::runtime::Runtime,
    server: Arc<Server>,
    _file: tempfile::NamedTempFile,
}

fn rig() -> &'static Rig {
    static R: OnceLock<Rig> = OnceLock::new();
    R.get_or_init(|| {
        let file = tempfile::NamedTempFile::new_in("/dev/shm").or_else(|_| tempfile::NamedTempFile::new()).unwrap();
        file.as_file().set_len(1 << 20).unwrap();
        let key: Vec<u8> = (0..64).collect();
        let cipher = Arc::new(SectorCipher::new(Algorithm::Aes, &key).unwrap());
        let disk = Disk::new(file.reopen().unwrap(), cipher, 0, 1 << 20, false);
        let export = Export { name: "disk".into(), description: "fuzz".into(), disk: Arc::new(disk) };
        let server = Arc::new(Server::new(vec![export], true, None));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Rig { rt, server, _file: file }
    })
}

fuzz_target!(|data: &[u8]| {
    let r = rig();
    let stream = tokio::io::join(std::io::Cursor::new(data.to_vec()), tokio::io::sink());
    r.rt.block_on(r.server.clone().handle(stream, "fuzz".into()));
});
