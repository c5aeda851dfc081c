//! What the kernel says about a process: CPU time used, resident memory; and CPU pinning.

use std::process::Command;

/// Clock ticks per second for `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
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
