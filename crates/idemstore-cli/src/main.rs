//! `idemctl`: an operator's tool for an idemstore directory.
//!
//! ```text
//! idemctl stats DIR                          keys, buckets, disk, what opening found
//! idemctl verify DIR                         every byte checked; exit 1 on damage
//! idemctl in-flight DIR                      reservations no holder finished: the audit list
//! idemctl get DIR --tenant T --key K         one key's state and stored response
//! idemctl release DIR --tenant T --key K     free a stuck reservation
//! idemctl purge DIR --tenant T --key K       delete a completion before its expiry
//! idemctl export DIR                         JSON lines of every live record
//! idemctl compact DIR                        delete the buckets that ended
//! ```
//!
//! Every read command takes `--json`, and `--read-only` to read a store a
//! running process has open (without its lock; nothing is changed). Exit
//! status: 0 done; 1 the answer is "no" (damage found, a record that could
//! not be read, no such key, nothing to release or purge); 2 the command
//! could not run (the message says why and what to do). A directory that
//! holds no store files is refused, never opened as a new, empty store.
//!
//! Modules: `cli` (the arguments), `open` (opening the directory, and what
//! to say when that fails), `commands` (one function per command), `render`
//! (records, times and reports as text and JSON), `progress` (the bars on
//! stderr). Imports flow from `main` to `commands` to the rest.

mod cli;
mod commands;
mod open;
mod progress;
mod render;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(commands::Outcome::Yes) => ExitCode::SUCCESS,
        Ok(commands::Outcome::No) => ExitCode::from(1),
        Err(e) => {
            eprintln!("idemctl: {e}");
            ExitCode::from(2)
        }
    }
}
