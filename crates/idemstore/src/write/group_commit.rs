//! The group-commit window: how long the writer keeps a batch open for the
//! callers the last fsync carried.
//!
//! Without one, callers split into groups that take turns: those woken by
//! one fsync queue up while the next runs, so each fsync carries only part of
//! them. The callers the last fsync carried are coming back, and so are those
//! that queued up meanwhile; in `Sync` mode, when that makes two or more, the
//! writer keeps the batch open until that many completions are in it, for at
//! most `min(group_commit_window, duration of the last fsync)`, and only
//! while they keep arriving faster than the batch drains them: a gap longer
//! than `fsync time / batch size` ends the wait (waiting `w` for `d` more
//! completions pays only if `d / batch > w / fsync`). A lone caller never
//! waits.
//!
//! When the callers take longer to come back than an fsync takes (a fast
//! disk, callers short of CPU), the window ends before they are all in and
//! only delays the batch; two batches taking turns, each fsyncing while the
//! other's callers come back, then do better (measured with a 260 µs fsync:
//! +20-30% at 64 callers). So after a window that ran out short of
//! `expected`, the next `LINGER_BACKOFF` batches skip it; then one is tried
//! again. (With a slow fsync the callers are back well within the window and
//! it stays on.)
//!
//! Whether a batch waits is [`GroupCommit::decide`], a function of the last
//! batch's numbers and the config, tested without a clock or a channel;
//! [`GroupCommit::linger`] carries the wait out.

use crate::config::{Config, Durability};
use crate::doorbell::Doorbell;
use crate::pipeline::{Append, Msg};
use crossbeam_channel::Receiver;
use std::time::{Duration, Instant};

/// Batches that skip the group-commit window after one that did not fill
/// (see the module docs).
const LINGER_BACKOFF: u32 = 16;

/// What the writer learnt from its last batch, for the next one's window.
#[derive(Default)]
pub(crate) struct GroupCommit {
    /// How long the last batch's fsyncs took (caps the group-commit window).
    last_fsync: Duration,
    /// Completions the last batch carried: those callers are coming back.
    last_completions: usize,
    /// Messages waiting in the channel when the last fsync returned.
    backlog_after_fsync: usize,
    /// Batches left that skip the group-commit window (see `decide`).
    linger_skip: u32,
}

/// Whether a batch waits for more completions before it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    /// Write the batch now.
    Skip,
    /// Keep the batch open until `expected` completions are in it, for at
    /// most `window`.
    Wait { expected: usize, window: Duration },
}

impl GroupCommit {
    /// Decides the window for a batch that holds `have` completions. A skip
    /// while backing off uses up one of the skipped batches.
    pub(crate) fn decide(
        &mut self,
        durability: Durability,
        group_commit_window: Duration,
        have: usize,
    ) -> Window {
        let expected = self.last_completions + self.backlog_after_fsync;
        if durability != Durability::Sync || expected < 2 || have >= expected {
            return Window::Skip;
        }
        if self.linger_skip > 0 {
            self.linger_skip -= 1;
            return Window::Skip;
        }
        Window::Wait {
            expected,
            window: group_commit_window.min(self.last_fsync),
        }
    }

    /// Keeps `batch` open as [`decide`](Self::decide) says, adding what
    /// arrives on `rx`. Returns a control message that ended the wait.
    pub(crate) fn linger(
        &mut self,
        cfg: &Config,
        doorbell: &Doorbell,
        rx: &Receiver<Msg>,
        batch: &mut Vec<Append>,
    ) -> Option<Msg> {
        let mut have = batch.iter().filter(|a| a.completes().is_some()).count();
        let Window::Wait { expected, window } =
            self.decide(cfg.durability, cfg.group_commit_window, have)
        else {
            return None;
        };
        let start = Instant::now();
        while have < expected && batch.len() < cfg.max_batch {
            let left = window.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            // Waiting pays while completions arrive faster than the batch
            // would drain them: one per (fsync time / batch size).
            let gap = self.last_fsync / u32::try_from(have.max(1)).unwrap_or(u32::MAX);
            match doorbell.recv(rx, Some(Instant::now() + left.min(gap))) {
                Ok(Msg::Append(a)) => {
                    have += usize::from(a.completes().is_some());
                    batch.push(a);
                }
                Ok(other) => return Some(other),
                Err(_) => break,
            }
        }
        // The whole window went by and they were not all back: they take
        // longer than an fsync.
        if have < expected && start.elapsed() >= window {
            self.linger_skip = LINGER_BACKOFF;
        }
        None
    }

    /// A batch is being appended: what waited in the channel is in it.
    pub(crate) fn appending(&mut self) {
        self.backlog_after_fsync = 0;
    }

    /// The batch just appended carried `completions` completions.
    pub(crate) fn carried(&mut self, completions: usize) {
        self.last_completions = completions;
    }

    /// The batch's fsyncs took `took`, and `backlog` messages queued up
    /// meanwhile.
    pub(crate) fn fsynced(&mut self, took: Duration, backlog: usize) {
        self.last_fsync = took;
        self.backlog_after_fsync = backlog;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn after(completions: usize, backlog: usize, fsync: Duration) -> GroupCommit {
        let mut g = GroupCommit::default();
        g.carried(completions);
        g.fsynced(fsync, backlog);
        g
    }

    #[test]
    fn waits_for_the_callers_the_last_fsync_carried_and_those_queued_meanwhile() {
        let mut g = after(3, 2, MS);
        assert_eq!(
            g.decide(Durability::Sync, 10 * MS, 1),
            Window::Wait {
                expected: 5,
                window: MS
            }
        );
        // The configured window caps the wait when it is shorter.
        assert_eq!(
            g.decide(Durability::Sync, MS / 2, 1),
            Window::Wait {
                expected: 5,
                window: MS / 2
            }
        );
    }

    #[test]
    fn never_waits_for_a_lone_caller_a_full_batch_or_outside_sync_mode() {
        let mut g = after(1, 0, MS);
        assert_eq!(g.decide(Durability::Sync, MS, 0), Window::Skip);
        let mut g = after(4, 0, MS);
        assert_eq!(g.decide(Durability::Sync, MS, 4), Window::Skip);
        assert_eq!(g.decide(Durability::Periodic(MS), MS, 1), Window::Skip);
        assert_eq!(g.decide(Durability::None, MS, 1), Window::Skip);
        // A batch appended since the fsync took the backlog with it.
        let mut g = after(1, 3, MS);
        g.appending();
        assert_eq!(g.decide(Durability::Sync, MS, 0), Window::Skip);
    }

    #[test]
    fn a_window_that_ran_out_is_skipped_for_the_next_batches() {
        let mut g = after(4, 0, MS);
        g.linger_skip = LINGER_BACKOFF;
        for _ in 0..LINGER_BACKOFF {
            assert_eq!(g.decide(Durability::Sync, MS, 1), Window::Skip);
        }
        assert_eq!(
            g.decide(Durability::Sync, MS, 1),
            Window::Wait {
                expected: 4,
                window: MS
            }
        );
    }
}
