//! Times `Store::open` on a directory, for profiling the open path.
//!
//! `open_dir fill DIR N [BODY]` fills DIR with N keys (BODY-byte bodies, 64
//! by default; 8 threads, `Durability::None`); `open_dir open DIR` opens it
//! and prints the time and the recovery report.

use idemstore::{Config, Durability, Store};
use idemstore_benches::durable_cycles;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cfg = || Config::default().durability(Durability::None);
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("fill"), Some(dir)) => {
            let n = args
                .get(3)
                .and_then(|a| a.parse().ok())
                .unwrap_or(1_000_000);
            let store = Store::open(dir, cfg()).expect("open");
            let body = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(64);
            durable_cycles(&store, 8, n, 0, body);
            store.close().expect("close");
        }
        (Some("open"), Some(dir)) => {
            let t = Instant::now();
            let store = Store::open(dir, cfg()).expect("open");
            let took = t.elapsed();
            println!("open: {:.3} s", took.as_secs_f64());
            println!("{:?}", store.recovery_report());
        }
        _ => eprintln!("usage: open_dir fill DIR N | open_dir open DIR"),
    }
}
