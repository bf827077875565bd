//! `ferry-dns-testserver`: a tiny authoritative DNS server for tests (e.g. on the netns
//! "internet host"). Not for production use.
//!
//! ```text
//! ferry-dns-testserver --listen 10.99.0.2:53 [--origin ferry.test.] \
//!     [--zone-file zone.txt] [--record "canary.ferry.test. 60 A 203.0.113.7"]...
//! ```
//! Prints `listening <addr>` on stdout once ready; runs until killed.

use std::process::ExitCode;

use anyhow::{Context, bail};
use ferry_dns::testserver::{TestServer, parse_record, parse_zone};

const USAGE: &str = "usage: ferry-dns-testserver --listen ADDR [--origin NAME] [--zone-file FILE] [--record LINE]...";

struct Args {
    listen: std::net::SocketAddr,
    origin: String,
    zone_text: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut listen = None;
    let mut origin = "test.".to_owned();
    let mut zone_text = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--listen" => listen = Some(value()?.parse().context("--listen")?),
            "--origin" => origin = value()?,
            "--zone-file" => {
                let path = value()?;
                zone_text.push_str(
                    &std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?,
                );
                zone_text.push('\n');
            }
            "--record" => {
                let line = value()?;
                parse_record(&line)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("--record {line:?}"))?;
                zone_text.push_str(&line);
                zone_text.push('\n');
            }
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(Args {
        listen: listen.context(USAGE)?,
        origin,
        zone_text,
    })
}

async fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    let records = parse_zone(&args.zone_text)?;
    let server = TestServer::start(args.listen, &args.origin, records).await?;
    #[allow(clippy::print_stdout)]
    {
        println!("listening {}", server.addr());
    }
    use std::io::Write;
    std::io::stdout().flush().ok();
    server.wait().await?;
    Ok(())
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
