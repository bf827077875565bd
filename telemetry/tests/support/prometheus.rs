//! Runs Debian's `prometheus` binary on loopback with a temporary config and data dir.
//!
//! Never the system service: our own child process, `--web.listen-address=127.0.0.1:<free>`,
//! killed (by the PID we started) when the guard drops, also on panic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// One scrape job.
pub struct Job<'a> {
    pub name: &'a str,
    pub target: SocketAddr,
    pub bearer: Option<&'a str>,
}

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("PROMETHEUS_BIN") {
        return Ok(p.into());
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = PathBuf::from(dir).join("prometheus");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("prometheus binary not found: apt-get install prometheus (or set PROMETHEUS_BIN)")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Prometheus {
    /// Starts Prometheus scraping `jobs` every second and waits until its API is ready.
    pub async fn start(jobs: &[Job<'_>]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for job in jobs {
            config.push_str(&format!(
                "  - job_name: {}\n    static_configs:\n      - targets: ['{}']\n",
                job.name, job.target
            ));
            if let Some(token) = job.bearer {
                let token_file = dir.path().join(format!("{}.token", job.name));
                std::fs::write(&token_file, token)?;
                config.push_str(&format!(
                    "    authorization:\n      type: Bearer\n      credentials_file: {}\n",
                    token_file.display()
                ));
            }
        }
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(binary()?)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning prometheus")?;
        let mut prom = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = super::http_get(addr, "/-/ready", None).await {
                if r.status == 200 {
                    return Ok(prom);
                }
            }
            if let Some(status) = prom.child.try_wait()? {
                bail!("prometheus exited early ({status}): {}", prom.log());
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready after 30 s: {}", prom.log());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Prometheus's own log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Instant query; the value of the single resulting series, `None` if the result is empty.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Option<f64>> {
        let path = format!("/api/v1/query?query={}", urlencode(expr));
        let reply = super::http_get(self.addr, &path, None).await?;
        let json: serde_json::Value = serde_json::from_str(&reply.body)
            .with_context(|| format!("query {expr}: {}", reply.body))?;
        if json["status"] != "success" {
            bail!("query {expr} failed: {json}");
        }
        let result = json["data"]["result"]
            .as_array()
            .context("no result array")?;
        match result.as_slice() {
            [] => Ok(None),
            [one] => {
                let v = one["value"][1].as_str().context("no value")?;
                Ok(Some(v.parse()?))
            }
            many => bail!("query {expr}: {} series, expected one", many.len()),
        }
    }

    /// Polls `expr` until it equals `want` (or `timeout` passes); returns the last value seen.
    pub async fn wait_for(&self, expr: &str, want: f64, timeout: Duration) -> anyhow::Result<f64> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            last = self.query(expr).await?;
            if last == Some(want) {
                return Ok(want);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!(
            "{expr}: wanted {want}, last value {last:?} after {timeout:?}; log:\n{}",
            self.log()
        )
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
