//! CPU time of a process or of the whole machine, from /proc: a benchmark's cost per operation
//! that does not depend on how the scheduler split the cores between load generator and server.

/// One process's CPU time (user + system, all its threads) from `/proc/<pid>/stat`.
#[derive(Clone, Copy)]
pub struct ProcessCpu {
    pid: u32,
    ticks: u64,
}

impl ProcessCpu {
    pub fn ticks(pid: u32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server is running");
        // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
        let rest = &stat[stat.rfind(')').expect("a /proc stat line") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After `)`: state is field 3, so utime (14) and stime (15) are at 11 and 12.
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// The process's CPU-seconds so far.
    pub fn seconds(pid: u32) -> f64 {
        Self::ticks(pid) as f64 / clock_ticks_per_second()
    }

    pub fn of(pid: u32) -> ProcessCpu {
        ProcessCpu { pid, ticks: Self::ticks(pid) }
    }

    /// Microseconds of the process's CPU per request since `self`.
    pub fn per_request_us(&self, requests: u64) -> f64 {
        let ticks = Self::ticks(self.pid).saturating_sub(self.ticks) as f64;
        ticks / clock_ticks_per_second() * 1e6 / requests.max(1) as f64
    }
}

pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// The whole machine's CPU time from `/proc/stat` (every process: load generator, sidecars,
/// database), so that a cell's cost per operation does not depend on how the scheduler split the
/// cores between them.
pub struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    pub fn now() -> MachineCpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> =
            stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
        let total: u64 = ticks.iter().take(8).sum();
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        MachineCpu { busy: total - idle, total }
    }

    /// Busy CPU-seconds since `self` and the idle share of all CPU time.
    pub fn since(&self) -> (f64, f64) {
        let now = MachineCpu::now();
        let hz = clock_ticks_per_second();
        let busy = now.busy.saturating_sub(self.busy) as f64;
        let total = now.total.saturating_sub(self.total).max(1) as f64;
        (busy / hz, 1.0 - busy / total)
    }
}
