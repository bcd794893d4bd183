//! `kms-delay LISTEN UPSTREAM MICROS`: a TCP relay that holds every byte for MICROS in each
//! direction, in order – a network between the sidecars and PostgreSQL for `bench/store.sh`
//! (`PG_DELAY_US`), on a machine where both run side by side. Pipelined requests stay pipelined:
//! each chunk is released at its arrival time plus the delay, so latency is added, not bandwidth
//! taken. Plain threads and `nanosleep` (tens of µs late at most), not an async timer (whole
//! milliseconds).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, micros] = &args[..] else {
        eprintln!("usage: kms-delay LISTEN UPSTREAM MICROS");
        std::process::exit(2);
    };
    let delay = Duration::from_micros(micros.parse().expect("MICROS: a number"));
    let listener = TcpListener::bind(listen).expect("listen");
    for client in listener.incoming().flatten() {
        let Ok(server) = TcpStream::connect(upstream) else { continue };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (c2, s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
        relay(client, s2, delay);
        relay(server, c2, delay);
    }
}

/// Copies `from` to `to` on two threads, each chunk released `delay` after it arrived.
fn relay(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        for (at, chunk) in rx {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
}
