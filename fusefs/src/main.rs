//! `kmsfs`: create, mount, inspect, rewrap and check encrypted volumes whose data key is wrapped
//! by the KMS. A thin CLI over the `kmsfs` library; exit codes are listed in `kmsfs --help`.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
