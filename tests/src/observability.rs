//! Helpers for the observability and DNS end-to-end tests: the authoritative test DNS server
//! (`ferry-dns-testserver`), `dig`, `curl` and a real Prometheus server, each run inside a
//! namespace of the lab (cleaned up with it).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netns::{Lab, Ns, ProcId};
use crate::wait::wait_until;

/// Zone origin of the test DNS server.
pub const ORIGIN: &str = "ferry.test.";
/// The name the tests resolve.
pub const CANARY_NAME: &str = "canary.ferry.test.";
/// Its address (TEST-NET-3; never dialed).
pub const CANARY_ADDR: &str = "203.0.113.7";

/// Starts `ferry-dns-testserver` in `ns` on `listen` (UDP+TCP) serving [`ORIGIN`] with
/// `records` (`"canary 60 A 203.0.113.7"`), and waits until it is ready.
pub fn dns_testserver(
    lab: &mut Lab,
    ns: &Ns,
    label: &str,
    listen: SocketAddr,
    records: &[&str],
) -> Result<ProcId> {
    let bin = crate::client::dns_server_binary()?
        .to_string_lossy()
        .into_owned();
    let listen_s = listen.to_string();
    let mut argv = vec![bin.as_str(), "--listen", &listen_s, "--origin", ORIGIN];
    for r in records {
        argv.extend(["--record", r]);
    }
    let id = lab.spawn(ns, label, &argv)?;
    wait_until(Duration::from_secs(20), "dns test server", || {
        lab.log(label).contains("listening")
    })
    .with_context(|| lab.log(label))?;
    Ok(id)
}

/// What `dig` got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigReply {
    /// Response code (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...).
    pub status: String,
    /// Addresses of the A/AAAA records in the answer section.
    pub addrs: Vec<String>,
}

/// `dig @server name A` from `ns` (one try, 2 s), over TCP if `tcp`. `None`: no answer.
pub fn dig(ns: &Ns, server: IpAddr, name: &str, tcp: bool) -> Result<Option<DigReply>> {
    let at = format!("@{server}");
    let proto = if tcp { "+tcp" } else { "+notcp" };
    let out = ns.exec_unchecked(&["dig", &at, "+time=2", "+tries=1", proto, name, "A"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(parse_dig(&text))
}

/// Parses dig's default output; `None` when no reply was received.
pub fn parse_dig(text: &str) -> Option<DigReply> {
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))?
        .split(',')
        .next()?
        .trim()
        .to_owned();
    let mut addrs = Vec::new();
    let mut in_answer = false;
    for line in text.lines() {
        if line.starts_with(";; ANSWER SECTION") {
            in_answer = true;
            continue;
        }
        if in_answer {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.is_empty() || line.starts_with(';') {
                break;
            }
            if f.len() >= 5 && (f[3] == "A" || f[3] == "AAAA") {
                addrs.push(f[4].to_owned());
            }
        }
    }
    Some(DigReply { status, addrs })
}

/// `GET url` with curl from `ns` (5 s); returns (HTTP status, body). Status 0: no connection.
pub fn http_get(ns: &Ns, url: &str, bearer: Option<&str>) -> Result<(u16, String)> {
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}"));
    let mut argv = vec!["curl", "-sS", "-m", "5", "-w", "\n%{http_code}"];
    if let Some(a) = &auth {
        argv.extend(["-H", a]);
    }
    argv.push(url);
    let out = ns.exec_unchecked(&argv)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

/// TCP segments retransmitted by `ns` so far (`RetransSegs` of `/proc/net/snmp`, per netns).
pub fn tcp_retrans_segs(ns: &Ns) -> Result<u64> {
    let snmp = ns.exec(&["cat", "/proc/net/snmp"])?;
    parse_retrans(&snmp).context("RetransSegs not in /proc/net/snmp")
}

fn parse_retrans(snmp: &str) -> Option<u64> {
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let i = names.split_whitespace().position(|n| n == "RetransSegs")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// The value of `series` (exact name and labels) in Prometheus text exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One scrape job of [`Prometheus`].
#[derive(Debug, Clone)]
pub struct Job {
    /// `job` label.
    pub name: String,
    /// `host:port` scraped at `/metrics`.
    pub target: SocketAddr,
    /// Bearer token sent with every scrape.
    pub bearer: Option<String>,
}

/// A real Prometheus server (Debian's `/usr/bin/prometheus`) in a namespace, 1 s scrape
/// interval, listening on 127.0.0.1:9090 of that namespace; stopped with the lab.
#[derive(Debug)]
pub struct Prometheus {
    /// The process.
    pub proc: ProcId,
    /// Log label.
    pub label: String,
    ns: Ns,
}

/// Port of Prometheus's HTTP API inside its namespace.
pub const PROMETHEUS_PORT: u16 = 9090;

impl Prometheus {
    /// Writes the config into the lab dir and starts Prometheus in `ns`, waiting until ready.
    pub fn start(lab: &mut Lab, ns: &Ns, jobs: &[Job]) -> Result<Self> {
        let bin = std::env::var_os("FERRY_PROMETHEUS_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
        if !bin.exists() {
            bail!(
                "{} not found: apt-get install prometheus (scripts/setup.sh)",
                bin.display()
            );
        }
        let dir = lab.dir().join("prometheus");
        std::fs::create_dir_all(&dir)?;
        let mut cfg = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for job in jobs {
            let _ = write!(
                cfg,
                "  - job_name: {}\n    static_configs:\n      - targets: ['{}']\n",
                job.name, job.target
            );
            if let Some(token) = &job.bearer {
                let file = dir.join(format!("{}.token", job.name));
                std::fs::write(&file, token)?;
                let _ = write!(
                    cfg,
                    "    authorization:\n      type: Bearer\n      credentials_file: {}\n",
                    file.display()
                );
            }
        }
        let cfg_file = dir.join("prometheus.yml");
        std::fs::write(&cfg_file, cfg)?;
        let label = "prometheus".to_owned();
        let argv = [
            bin.to_string_lossy().into_owned(),
            format!("--config.file={}", cfg_file.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"),
            "--log.level=warn".to_owned(),
        ];
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let proc = lab.spawn(ns, &label, &argv)?;
        let prom = Self {
            proc,
            label,
            ns: ns.clone(),
        };
        let ready = wait_until(Duration::from_secs(30), "prometheus ready", || {
            http_get(ns, &prom.url("/-/ready"), None).is_ok_and(|(code, _)| code == 200)
        });
        if ready.is_err() {
            bail!("prometheus did not start:\n{}", lab.log(&prom.label));
        }
        Ok(prom)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{PROMETHEUS_PORT}{path}")
    }

    /// Instant query through `/api/v1/query`; the value of the first series, if any.
    pub fn query(&self, expr: &str) -> Result<Option<f64>> {
        let q = format!("query={expr}");
        let url = self.url("/api/v1/query");
        let out = self
            .ns
            .exec(&["curl", "-sS", "-m", "5", "-G", "--data-urlencode", &q, &url])?;
        if !out.contains("\"status\":\"success\"") {
            bail!("prometheus query {expr:?} failed: {out}");
        }
        Ok(parse_query_value(&out))
    }
}

/// First sample value of an instant-vector query response.
pub fn parse_query_value(json: &str) -> Option<f64> {
    let rest = json.split("\"value\":[").nth(1)?;
    let quoted = rest.split(',').nth(1)?;
    quoted
        .trim()
        .trim_start_matches('"')
        .split('"')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dig_output_is_parsed_for_status_and_addresses() {
        let text = "\
; <<>> DiG 9.18 <<>> @10.77.0.1 canary.ferry.test A
;; global options: +cmd
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 4242
;; flags: qr rd ra; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1

;; QUESTION SECTION:
;canary.ferry.test.\t\tIN\tA

;; ANSWER SECTION:
canary.ferry.test.\t60\tIN\tA\t203.0.113.7

;; Query time: 3 msec
";
        let r = parse_dig(text).unwrap();
        assert_eq!(r.status, "NOERROR");
        assert_eq!(r.addrs, vec!["203.0.113.7".to_owned()]);
        let nx = parse_dig(";; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 1\n").unwrap();
        assert_eq!(nx.status, "NXDOMAIN");
        assert!(nx.addrs.is_empty());
        assert_eq!(
            parse_dig(";; connection timed out; no servers could be reached\n"),
            None
        );
    }

    #[test]
    fn retransmitted_segments_are_read_from_snmp() {
        let snmp = "Ip: Forwarding\nIp: 1\nTcp: RtoAlgorithm OutSegs RetransSegs InErrs\nTcp: 1 900 17 0\n";
        assert_eq!(parse_retrans(snmp), Some(17));
        assert_eq!(parse_retrans("Ip: x\nIp: 1\n"), None);
    }

    #[test]
    fn prometheus_query_value_and_text_samples_are_parsed() {
        let json = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.5,"8392704"]}]}}"#;
        assert_eq!(parse_query_value(json), Some(8_392_704.0));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_query_value(empty), None);
        let text = "# TYPE x counter\nwireguard_sent_bytes_total 12\nferry_dns_queries_total 3\n";
        assert_eq!(sample(text, "wireguard_sent_bytes_total"), Some(12.0));
        assert_eq!(sample(text, "wireguard_sent_bytes"), None);
    }
}
