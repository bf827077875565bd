//! Process metrics read at scrape time (Linux `/proc`; absent elsewhere).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::metrics::gauge;

#[derive(Debug)]
pub(crate) struct ProcessCollector {
    start_unix: u64,
}

impl ProcessCollector {
    pub(crate) fn new() -> Self {
        let start_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self { start_unix }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        if let Some(rss) = resident_bytes() {
            gauge(
                &mut enc,
                "process_resident_memory_bytes",
                "Resident set size of this process",
                rss,
            )?;
        }
        gauge(
            &mut enc,
            "process_start_time_seconds",
            "Unix time when metrics were set up (about process start)",
            self.start_unix,
        )
    }
}

/// Resident set size in bytes: `/proc/self/statm` field 2 (pages) times the page size.
///
/// Getting the page size from `sysconf` would need `unsafe` (forbidden here). It is 4 KiB on
/// most OpenWrt targets but 16 KiB on some MIPS/LoongArch kernels, so it is read once from
/// `KernelPageSize` in `/proc/self/smaps`, falling back to 4096.
pub(crate) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(page_size()))
}

fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| read_page_size().unwrap_or(4096))
}

fn read_page_size() -> Option<u64> {
    use std::io::{BufRead, BufReader};
    let file = std::fs::File::open("/proc/self/smaps").ok()?;
    BufReader::new(file)
        .lines()
        .take(64)
        .map_while(Result::ok)
        .find_map(|line| parse_kernel_page_size(&line))
}

fn parse_kernel_page_size(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("KernelPageSize:")?;
    let kb: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_kernel_page_size_lines() {
        assert_eq!(
            parse_kernel_page_size("KernelPageSize:        4 kB"),
            Some(4096)
        );
        assert_eq!(
            parse_kernel_page_size("KernelPageSize:       16 kB"),
            Some(16384)
        );
        assert_eq!(parse_kernel_page_size("MMUPageSize:        4 kB"), None);
    }

    #[test]
    fn resident_bytes_grows_when_we_touch_memory() {
        let before = resident_bytes().unwrap();
        // Touch 32 MiB so it must become resident.
        let block = vec![1u8; 32 << 20];
        let after = resident_bytes().unwrap();
        assert!(block.iter().step_by(4096).all(|b| *b == 1));
        assert!(
            after >= before + (16 << 20),
            "before {before} after {after}"
        );
    }
}
