//! `ferry-dns-testserver`: a tiny authoritative DNS server for tests (e.g. on the netns
//! "internet host"). Not for production use.
//!
//! ```text
//! ferry-dns-testserver --listen 10.99.0.2:53 [--origin ferry.test.] \
//!     [--zone-file zone.txt] [--record "canary.ferry.test. 60 A 203.0.113.7"]... \
//!     [--tls-cert chain.pem --tls-key key.pem [--dot-listen ADDR] [--doh-listen ADDR]]
//! ```
//! Prints `listening <addr>` on stdout once everything is ready (then `dot <addr>` and
//! `doh <addr>` when TLS is on; DoH path `/dns-query`); runs until killed.

use std::process::ExitCode;

use anyhow::{Context, bail};
use ferry_dns::testserver::{TestServer, parse_record, parse_zone};

const USAGE: &str = "usage: ferry-dns-testserver --listen ADDR [--origin NAME] [--zone-file FILE] \
[--record LINE]... [--tls-cert PEM --tls-key PEM [--dot-listen ADDR] [--doh-listen ADDR]]";

struct Args {
    listen: std::net::SocketAddr,
    origin: String,
    zone_text: String,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    dot_listen: Option<std::net::SocketAddr>,
    doh_listen: Option<std::net::SocketAddr>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut listen = None;
    let mut origin = "test.".to_owned();
    let mut zone_text = String::new();
    let (mut tls_cert, mut tls_key, mut dot_listen, mut doh_listen) = (None, None, None, None);
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
            "--tls-cert" => tls_cert = Some(value()?),
            "--tls-key" => tls_key = Some(value()?),
            "--dot-listen" => dot_listen = Some(value()?.parse().context("--dot-listen")?),
            "--doh-listen" => doh_listen = Some(value()?.parse().context("--doh-listen")?),
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(Args {
        listen: listen.context(USAGE)?,
        origin,
        zone_text,
        tls_cert,
        tls_key,
        dot_listen,
        doh_listen,
    })
}

async fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    let records = parse_zone(&args.zone_text)?;
    let mut server = TestServer::start(args.listen, &args.origin, records).await?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read =
                |p: &String| std::fs::read_to_string(p).with_context(|| format!("reading {p}"));
            let ip = args.listen.ip();
            let dot = args.dot_listen.unwrap_or((ip, 853).into());
            let doh = args.doh_listen.unwrap_or((ip, 443).into());
            Some(server.add_tls(dot, doh, &read(cert)?, &read(key)?).await?)
        }
        (None, None) if args.dot_listen.is_none() && args.doh_listen.is_none() => None,
        _ => bail!("TLS needs both --tls-cert and --tls-key\n{USAGE}"),
    };
    #[allow(clippy::print_stdout)]
    {
        println!("listening {}", server.addr());
        if let Some((dot, doh)) = tls {
            println!("dot {dot}");
            println!("doh {doh}");
        }
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
