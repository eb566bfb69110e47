//! What the machine is: CPU name, cache sizes, memory levels, load.

use std::fmt;

/// A level of the memory hierarchy a working set lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    L1,
    L2,
    L3,
    Dram,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::L1, Level::L2, Level::L3, Level::Dram];

    pub fn name(self) -> &'static str {
        match self {
            Level::L1 => "L1",
            Level::L2 => "L2",
            Level::L3 => "L3",
            Level::Dram => "DRAM",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The machine.
#[derive(Clone, Debug)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo, or the architecture.
    pub cpu: String,
    /// Available parallelism.
    pub cpus: usize,
    /// L1 data cache per core, bytes.
    pub l1d: usize,
    /// L2 per core, bytes.
    pub l2: usize,
    /// Last-level cache (shared), bytes.
    pub l3: usize,
    /// Where the cache sizes came from.
    pub cache_source: &'static str,
}

/// `"32K"`, `"1024K"`, `"32M"` as bytes.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mul) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1024),
        b'M' => (&s[..s.len() - 1], 1024 * 1024),
        b'G' => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<usize>().ok().map(|n| n * mul)
}

/// `(l1d, l2, l3)` from Linux's sysfs.
fn sysfs_caches() -> Option<(usize, usize, usize)> {
    let base = "/sys/devices/system/cpu/cpu0/cache";
    let (mut l1, mut l2, mut l3) = (None, None, None);
    for i in 0..8 {
        let dir = format!("{base}/index{i}");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
        let (Some(level), Some(ty), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            continue;
        };
        let size = parse_size(&size);
        match (level.trim(), ty.trim()) {
            ("1", "Data") => l1 = size,
            ("2", _) => l2 = size,
            ("3", _) => l3 = size,
            _ => {}
        }
    }
    Some((l1?, l2?, l3.unwrap_or(l2? * 4)))
}

impl Machine {
    pub fn detect() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (l1d, l2, l3, cache_source) = match sysfs_caches() {
            Some((a, b, c)) => (a, b, c, "sysfs"),
            // Zen 4 sizes when the OS does not say.
            None => (32 << 10, 1 << 20, 32 << 20, "assumed (Zen 4)"),
        };
        Machine {
            cpu,
            cpus,
            l1d,
            l2,
            l3,
            cache_source,
        }
    }

    /// Bytes each of `threads` threads touches to measure `level` (total working set: source
    /// plus destination for a copy, the array for a read): half of a private L1/L2 per thread,
    /// a quarter of the shared L3 split between threads, and for DRAM at least 16x (quick: 4x)
    /// the L3, split between threads.
    pub fn probe_bytes(&self, level: Level, threads: usize, quick: bool) -> usize {
        let t = threads.max(1);
        let b = match level {
            Level::L1 => (self.l1d / 2).min(16 << 10),
            Level::L2 => self.l2 / 2,
            Level::L3 => self.l3 / 4 / t,
            Level::Dram if quick => (128usize << 20).max(4 * self.l3) / t,
            Level::Dram => (512usize << 20).max(16 * self.l3) / t,
        };
        // Whole 256-byte blocks (the copy and read loops' unit).
        (b / 256).max(1) * 256
    }

    /// The level a footprint of `bytes` stays in between calls when `threads` threads share it
    /// (the private L1 and L2 hold `bytes / threads` each, up to their size; the shared L3,
    /// which also holds other cores' data, up to 3/4 of its size).
    pub fn level_of(&self, bytes: usize, threads: usize) -> Level {
        let per = bytes / threads.max(1);
        if per <= self.l1d {
            Level::L1
        } else if per <= self.l2 {
            Level::L2
        } else if bytes <= self.l3 / 4 * 3 {
            Level::L3
        } else {
            Level::Dram
        }
    }
}

/// `/proc/loadavg`'s first three fields (the 1, 5 and 15 minute load averages), if any.
pub fn loadavg() -> Option<String> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32K\n"), Some(32 << 10));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("512"), Some(512));
        let m = Machine {
            cpu: String::new(),
            cpus: 2,
            l1d: 32 << 10,
            l2: 1 << 20,
            l3: 32 << 20,
            cache_source: "test",
        };
        assert_eq!(m.level_of(80, 1), Level::L1);
        assert_eq!(m.level_of(4 * 10 * 784, 1), Level::L1);
        assert_eq!(m.level_of(3 << 20, 2), Level::L3);
        assert_eq!(m.level_of(512 << 10, 1), Level::L2);
        assert_eq!(m.level_of(1 << 30, 2), Level::Dram);
        assert_eq!(m.probe_bytes(Level::L1, 2, false), 16 << 10);
        assert_eq!(m.probe_bytes(Level::L3, 2, false), 4 << 20);
    }
}
