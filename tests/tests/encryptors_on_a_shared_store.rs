//! The two encryptors on one KMS of three sidecars sharing a real PostgreSQL: a kmsfs volume
//! mounted through node A and a blockcrypt disk served over NBD through node B, written to while
//! node C rotates both CMKs again and again; then both rewrap – each through its own node – to
//! the newest version node C made, mount and serve again, and read back every byte.

use std::time::{Duration, Instant};

use kms_client::client::Client;
use kms_e2e::sidecar::{config_for_services, Sidecar};
use kms_e2e::{kmsfs_wrapping_version, ok, run, tool, KmsfsMount, NbdServer};

/// The sidecars' default lease: how stale a node's view of a rotation may be.
const LEASE: Duration = Duration::from_secs(2);

fn create_version(owner: &Client, key: &str) -> String {
    let v: serde_json::Value =
        owner.call("CreateKeyVersion", &kms_core::api::KeyIdRequest { key_id: key.to_string() }).unwrap();
    v["KeyVersion"]["KeyVersionId"].as_str().unwrap().to_string()
}

/// Runs `attempt` until it returns what `want` is, for at most the lease and a margin: a node
/// sees another's rotation within the lease.
fn within_lease(want: &str, mut attempt: impl FnMut() -> String) {
    let deadline = Instant::now() + LEASE + Duration::from_secs(1);
    loop {
        let got = attempt();
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "still {got} a lease after {want} was made");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kmsfs_on_one_node_and_blockcrypt_on_another_rewrap_while_a_third_rotates() {
    assert!(pg_harness::available(), "PostgreSQL server binaries are needed (bash .ci/setup installs postgresql)");
    let url = pg_harness::fresh_database("encryptors");
    let config = config_for_services(&[("oss", "kmsfs"), ("ecs", "blockcrypt")]);
    let a = Sidecar::node(Some(&config), &url, "node-a", None);
    let root = a.root_key();
    let b = Sidecar::node(Some(&config), &url, "node-b", Some(&root));
    let c = Sidecar::node(Some(&config), &url, "node-c", Some(&root));
    let (fs_cmk, disk_cmk) = (c.tagged_cmk("kmsfs"), c.tagged_cmk("blockcrypt"));

    let dir = tempfile::tempdir().unwrap();
    let (cipher, mnt, disk, sock) =
        (dir.path().join("cipher"), dir.path().join("mnt"), dir.path().join("disk.img"), dir.path().join("nbd.sock"));
    std::fs::create_dir_all(&cipher).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let (pa, pb) = (a.profile().display().to_string(), b.profile().display().to_string());
    let (via_a, via_b) = (["--profile", pa.as_str()], ["--profile", pb.as_str()]);
    let (cipher_s, disk_s) = (cipher.to_str().unwrap(), disk.to_str().unwrap());

    // Made on C, used at once through A and B.
    ok(&run("kmsfs", &[&via_a[..], &["init", cipher_s, "--key-id", &fs_cmk]].concat()));
    ok(&run("blockcrypt", &[&via_b[..], &["create", disk_s, "--size", "64M", "--key-id", &disk_cmk]].concat()));
    let mut mount = KmsfsMount::start(&via_a, &cipher, &mnt);
    let mut server = NbdServer::start(&via_b, &sock, &[disk_s], &[]);
    let uri = server.uri("disk.img");

    // C rotates both CMKs while files and sectors are written through A's mount and B's server.
    let rotator = {
        let (owner, fs_cmk, disk_cmk) = (c.client(), fs_cmk.clone(), disk_cmk.clone());
        std::thread::spawn(move || {
            let mut last = (String::new(), String::new());
            for _ in 0..8 {
                last = (create_version(&owner, &fs_cmk), create_version(&owner, &disk_cmk));
                std::thread::sleep(Duration::from_millis(100));
            }
            last
        })
    };
    for i in 0..40u8 {
        std::fs::write(mnt.join(format!("file-{i}")), vec![i; 4096 + i as usize * 997]).unwrap();
        let off = i as u64 * 1024 * 1024;
        tool("qemu-io", &["-f", "raw", &uri, "-c", &format!("write -P {} {off} 512k", i + 1)]);
    }
    let (fs_newest, disk_newest) = rotator.join().unwrap();
    mount.unmount();
    server.stop();

    // Each rewraps through its own node; within the lease that node wraps under C's newest version.
    within_lease(&fs_newest, || {
        ok(&run("kmsfs", &[&via_a[..], &["rewrap", cipher_s]].concat()));
        kmsfs_wrapping_version(&cipher)
    });
    within_lease(&disk_newest, || {
        let out = ok(&run("blockcrypt", &[&via_b[..], &["rewrap", disk_s]].concat()));
        out.trim().rsplit(' ').next().unwrap().to_string()
    });
    // One more rotation on C: the rewrapped volume and disk open through the *other* nodes too.
    create_version(&c.client(), &fs_cmk);
    create_version(&c.client(), &disk_cmk);
    let pc = c.profile().display().to_string();
    let via_c = ["--profile", pc.as_str()];
    let mut mount = KmsfsMount::start(&via_c, &cipher, &mnt);
    let mut server = NbdServer::start(&via_a, &sock, &[disk_s], &[]);
    for i in 0..40u8 {
        assert_eq!(std::fs::read(mnt.join(format!("file-{i}"))).unwrap(), vec![i; 4096 + i as usize * 997]);
        let off = i as u64 * 1024 * 1024;
        tool("qemu-io", &["-f", "raw", &uri, "-c", &format!("read -P {} {off} 512k", i + 1)]);
    }
    mount.unmount();
    server.stop();
}
