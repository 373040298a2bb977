//! Resident memory of a process, from `/proc` (Linux only, as are the soak and the load
//! tool's memory reports).

/// `VmRSS` of `pid` in KiB; `None` once the process is gone (or off Linux), so a caller
/// never compares growth between zeros.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
