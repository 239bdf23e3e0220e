//! The standard `process_*` metrics (CPU, memory, file descriptors,
//! threads, start time) that the alert rules and the dashboard read, with
//! the names and help texts Prometheus' own clients use.
//!
//! Read from `/proc/self` at each scrape. The `prometheus` crate has a
//! collector for this, but it brings the `procfs` crate and its
//! dependencies into every build for four small files; this one reads them
//! itself. Unlike that collector, `process_cpu_seconds_total` keeps its
//! fraction of a second (a rate over a short window is not a staircase).

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, IntGauge, Opts};

/// The collector; register it once per registry.
pub struct ProcessCollector {
    descs: Vec<Desc>,
    cpu: Counter,
    open_fds: IntGauge,
    max_fds: IntGauge,
    virtual_memory: IntGauge,
    resident_memory: IntGauge,
    start_time: IntGauge,
    threads: IntGauge,
}

/// What `/proc/self/stat` says, in the units of the metrics.
#[derive(Debug, PartialEq)]
pub struct Stat {
    pub cpu_seconds: f64,
    pub threads: i64,
    /// Seconds after boot.
    pub started_after_boot: f64,
    pub virtual_bytes: i64,
    pub resident_bytes: i64,
}

impl ProcessCollector {
    pub fn new() -> ProcessCollector {
        let gauge = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help)).unwrap();
        let cpu = Counter::with_opts(Opts::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        ))
        .unwrap();
        let open_fds = gauge("process_open_fds", "Number of open file descriptors.");
        let max_fds = gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
        );
        let virtual_memory = gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        );
        let resident_memory = gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        );
        let start_time = gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        );
        let threads = gauge("process_threads", "Number of OS threads in the process.");
        // The start never changes: read once.
        if let (Some(boot), Some(stat)) = (boot_time(), read_stat()) {
            start_time.set(boot + stat.started_after_boot as i64);
        }
        let descs = [
            cpu.desc(),
            open_fds.desc(),
            max_fds.desc(),
            virtual_memory.desc(),
            resident_memory.desc(),
            start_time.desc(),
            threads.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        ProcessCollector {
            descs,
            cpu,
            open_fds,
            max_fds,
            virtual_memory,
            resident_memory,
            start_time,
            threads,
        }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector::new()
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = Vec::with_capacity(7);
        if let Some(stat) = read_stat() {
            // A counter only goes up; the kernel's figure never goes down.
            let seen = self.cpu.get();
            if stat.cpu_seconds > seen {
                self.cpu.inc_by(stat.cpu_seconds - seen);
            }
            self.virtual_memory.set(stat.virtual_bytes);
            self.resident_memory.set(stat.resident_bytes);
            self.threads.set(stat.threads);
            families.extend(self.cpu.collect());
            families.extend(self.virtual_memory.collect());
            families.extend(self.resident_memory.collect());
            families.extend(self.threads.collect());
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // (the directory being read is one of them, as in other clients)
            self.open_fds.set(dir.count() as i64);
            families.extend(self.open_fds.collect());
        }
        if let Some(limit) = open_files_limit() {
            self.max_fds.set(limit);
            families.extend(self.max_fds.collect());
        }
        if self.start_time.get() > 0 {
            families.extend(self.start_time.collect());
        }
        families
    }
}

fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // SAFETY: sysconf reads constants of the running system.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    #[allow(clippy::unnecessary_cast)] // c_long: i64 here, i32 on 32-bit Linux
    parse_stat(&text, ticks as f64, page as i64)
}

/// Parses `/proc/<pid>/stat` (proc(5)). The command name (field 2) is in
/// parentheses and may hold spaces or parentheses itself, so the fields are
/// counted from the last `)`.
pub fn parse_stat(text: &str, ticks_per_second: f64, page_size: i64) -> Option<Stat> {
    if ticks_per_second <= 0.0 {
        return None;
    }
    let rest = &text[text.rfind(')')? + 1..];
    // rest starts at field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| -> Option<i64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime) = (field(14)?, field(15)?);
    Some(Stat {
        cpu_seconds: (utime + stime) as f64 / ticks_per_second,
        threads: field(20)?,
        started_after_boot: field(22)? as f64 / ticks_per_second,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)?.saturating_mul(page_size),
    })
}

/// The boot time in seconds since the epoch (`btime` in `/proc/stat`).
fn boot_time() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    parse_boot_time(&text)
}

pub fn parse_boot_time(text: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit on open files; `None` when unlimited.
fn open_files_limit() -> Option<i64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // a command name with a space and a parenthesis of its own
        let line = "4242 (usher (x) y) S 1 4242 4242 0 -1 4194560 2117 0 0 0 \
                    250 150 0 0 20 0 7 0 12000 123456789 5000 18446744073709551615";
        let s = parse_stat(line, 100.0, 4096).unwrap();
        assert_eq!(
            s,
            Stat {
                cpu_seconds: 4.0,
                threads: 7,
                started_after_boot: 120.0,
                virtual_bytes: 123456789,
                resident_bytes: 5000 * 4096,
            }
        );
        assert_eq!(parse_stat("4242 (usher) S 1 2", 100.0, 4096), None);
        assert_eq!(parse_stat("no parenthesis", 100.0, 4096), None);
    }

    #[test]
    fn boot_time_is_read_from_btime() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1764979200\nprocesses 9\n";
        assert_eq!(parse_boot_time(text), Some(1_764_979_200));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    #[test]
    fn this_process_is_reported_with_the_usual_names() {
        let r = prometheus::Registry::new();
        r.register(Box::new(ProcessCollector::new())).unwrap();
        let names: Vec<String> = r.gather().iter().map(|f| f.name().to_string()).collect();
        for name in [
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_virtual_memory_bytes",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_threads",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        let stat = read_stat().unwrap();
        assert!(stat.threads >= 1 && stat.resident_bytes > 0, "{stat:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let start = boot_time().unwrap() + stat.started_after_boot as i64;
        assert!(start <= now && start > now - 86_400 * 365, "{start}");
    }
}
