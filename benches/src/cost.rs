//! What one durable cycle costs, beyond the rate: the process's CPU time
//! (user + system, from `/proc/self/stat`) per cycle, and the latency
//! percentiles of a cycle as each caller saw it. The loops time every
//! cycle (two clock reads, tens of nanoseconds, against cycles of tens of
//! microseconds and more).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// A measured cell.
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    /// Cycles per second.
    pub rate: f64,
    /// CPU time (user + system, every thread of this process) per cycle,
    /// in µs; `NaN` where `/proc` cannot say.
    pub cpu_us: f64,
    /// Latency of a cycle, in µs: median, 99th and 99.9th percentiles.
    pub p50_us: f64,
    /// See `p50_us`.
    pub p99_us: f64,
    /// See `p50_us`.
    pub p999_us: f64,
}

/// The CPU time this process has used so far, all threads, or `None`
/// without `/proc`.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: utime and stime are the 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks()))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The cost of `n` cycles over `elapsed`, with `cpu` used, from every
/// cycle's latency in `lat` (ns; sorted here).
fn cost(elapsed: Duration, cpu: Option<Duration>, mut lat: Vec<u64>) -> Cost {
    lat.sort_unstable();
    let n = lat.len().max(1);
    // The latency at `permille` (of n, rounded down, at most the last).
    let at = |permille: usize| {
        let i = (n * permille / 1000).min(n - 1);
        lat.get(i).map_or(f64::NAN, |v| *v as f64 / 1000.0)
    };
    Cost {
        rate: lat.len() as f64 / elapsed.as_secs_f64(),
        cpu_us: cpu.map_or(f64::NAN, |c| c.as_secs_f64() * 1e6 / n as f64),
        p50_us: at(500),
        p99_us: at(990),
        p999_us: at(999),
    }
}

/// Runs `op(thread, i)` from `callers` threads for about `secs`, timing
/// every call.
pub fn threads(callers: usize, secs: f64, op: impl Fn(usize, u64) + Send + Sync + 'static) -> Cost {
    let op = Arc::new(op);
    let barrier = Arc::new(Barrier::new(callers + 1));
    let end = Arc::new(std::sync::OnceLock::<Instant>::new());
    let handles: Vec<_> = (0..callers)
        .map(|t| {
            let (op, barrier, end) = (op.clone(), barrier.clone(), end.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let end = *end.get().expect("set before release");
                let mut lat = Vec::with_capacity(1 << 16);
                let mut i = 0u64;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        return lat;
                    }
                    op(t, i);
                    lat.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    i += 1;
                }
            })
        })
        .collect();
    let cpu0 = process_cpu();
    let start = Instant::now();
    let _ = end.set(start + Duration::from_secs_f64(secs));
    barrier.wait();
    let lat: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    let elapsed = start.elapsed();
    let cpu = process_cpu().zip(cpu0).map(|(a, b)| a.saturating_sub(b));
    cost(elapsed, cpu, lat)
}

/// Runs `op(task, i)` from `callers` tokio tasks on `rt` for about `secs`,
/// timing every call (the async twin of [`threads`]).
pub fn tasks<F, Fut>(rt: &tokio::runtime::Runtime, callers: usize, secs: f64, op: F) -> Cost
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let cpu0 = process_cpu();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let lat = rt.block_on(async move {
        let handles: Vec<_> = (0..callers)
            .map(|t| {
                let op = op.clone();
                tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(1 << 16);
                    let mut i = 0u64;
                    loop {
                        let t0 = Instant::now();
                        if t0 >= end {
                            return lat;
                        }
                        op(t, i).await;
                        lat.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
                        i += 1;
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.expect("task"));
        }
        all
    });
    let elapsed = start.elapsed();
    let cpu = process_cpu().zip(cpu0).map(|(a, b)| a.saturating_sub(b));
    cost(elapsed, cpu, lat)
}
