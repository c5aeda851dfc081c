//! What the kernel says about a process: CPU time used (in all, or per thread name),
//! resident memory; and CPU pinning.

use std::process::Command;

/// Clock ticks per second for `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

/// CPU seconds used so far by the process's live threads, summed per thread name (the
/// kernel's `comm`, at most 15 bytes: `fluxgate-stream`, `sqlx-sqlite-wor`, …), so a
/// scenario can say which part of the broker its CPU went to. Threads that already ended
/// are not counted.
pub fn cpu_seconds_by_thread_name(
    pid: u32,
) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let mut by_name = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path();
        // A thread may end between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map(|(name, _)| name.to_owned())
            .unwrap_or_default();
        *by_name.entry(name).or_insert(0.0) += stat_cpu_seconds(&stat)?;
    }
    Ok(by_name)
}

/// utime plus stime of a `/proc/.../stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> anyhow::Result<f64> {
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (0-based 11, 12).
    let utime: f64 = fields.get(11).unwrap_or(&"0").parse()?;
    let stime: f64 = fields.get(12).unwrap_or(&"0").parse()?;
    Ok((utime + stime) / TICKS_PER_SECOND)
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?
        .parse::<u64>()?;
    Ok(kib * 1024)
}

/// Pins a process (all its threads) to one CPU, so the system under test and the load
/// generator do not share a core (see docs/benchmarks.md).
pub fn pin(pid: u32, cpu: usize) {
    let status = Command::new("taskset")
        // taskset -a (all threads) -c (a CPU list) -p <list> <pid>
        .args(["-a", "-c", "-p", &cpu.to_string(), &pid.to_string()])
        .output();
    if !matches!(status, Ok(ref output) if output.status.success()) {
        eprintln!("warning: could not pin process {pid} to CPU {cpu}; numbers will be noisier");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "a plain test thread, outside any runtime, polls the kernel's figures"
    )]
    fn this_process_s_threads_are_counted_under_their_names() {
        let worker = std::thread::Builder::new()
            .name("bench-spinner".to_owned())
            .spawn(|| {
                let started = std::time::Instant::now();
                let mut n = 0u64;
                while started.elapsed() < std::time::Duration::from_millis(300) {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
                // Still alive while the main thread reads its time.
                std::thread::park();
            })
            .expect("spawn");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let spun = loop {
            let by_name = cpu_seconds_by_thread_name(std::process::id()).expect("readable");
            let spun = by_name.get("bench-spinner").copied().unwrap_or(0.0);
            if spun >= 0.2 || std::time::Instant::now() > deadline {
                break spun;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        worker.thread().unpark();
        worker.join().expect("join");
        assert!(
            spun >= 0.2,
            "the spinning thread used {spun} s, expected about 0.3 s"
        );
    }
}
