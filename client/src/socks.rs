//! `ferry socks5`: an unprivileged SOCKS5 proxy (RFC 1928, no authentication, CONNECT only)
//! whose connections leave through the tunnel from a userspace TCP/IP stack (smoltcp). No
//! TUN device, routes or root needed. Domain names in requests are resolved through the
//! relay's resolver inside the tunnel (like `socks5h`), never by the local system resolver.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::cli::Socks5Args;
use crate::config::Config;
use crate::engine::{Engine, relay_socket};
use crate::paths::Paths;
use crate::session::prepare;
use crate::stack::{Command, Stack};

/// SOCKS5 reply codes (RFC 1928 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    Succeeded = 0,
    GeneralFailure = 1,
    ConnectionNotAllowed = 2,
    HostUnreachable = 4,
    ConnectionRefused = 5,
    CommandNotSupported = 7,
    AddressTypeNotSupported = 8,
}

/// A request's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Ip(SocketAddr),
    Name(String, u16),
}

/// Reads the greeting and answers it; `Ok(false)` if the client offers no acceptable method.
pub(crate) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<bool> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    if head[0] != 5 {
        bail!("not SOCKS5 (version {})", head[0]);
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut methods).await?;
    if methods.contains(&0) {
        s.write_all(&[5, 0]).await?;
        Ok(true)
    } else {
        s.write_all(&[5, 0xff]).await?;
        Ok(false)
    }
}

/// Reads a request; `Err(reply)` for requests we refuse (the caller answers with it).
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    s: &mut S,
) -> Result<std::result::Result<Target, Reply>> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await?;
    if h[0] != 5 {
        bail!("bad request version {}", h[0]);
    }
    let target = match h[3] {
        1 => {
            let mut a = [0u8; 6];
            s.read_exact(&mut a).await?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(Target::Ip(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[4], a[5]]),
            )))
        }
        4 => {
            let mut a = [0u8; 18];
            s.read_exact(&mut a).await?;
            let mut b = [0u8; 16];
            b.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(b);
            Ok(Target::Ip(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[16], a[17]]),
            )))
        }
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0]) + 2];
            s.read_exact(&mut name).await?;
            let port = u16::from_be_bytes([name[name.len() - 2], name[name.len() - 1]]);
            name.truncate(name.len() - 2);
            match String::from_utf8(name) {
                Ok(n) if !n.is_empty() => Ok(Target::Name(n, port)),
                _ => Err(Reply::HostUnreachable),
            }
        }
        _ => Err(Reply::AddressTypeNotSupported),
    };
    if h[1] != 1 {
        return Ok(Err(Reply::CommandNotSupported));
    }
    Ok(target)
}

/// Writes a reply with a zero bound address.
pub(crate) async fn write_reply<S: AsyncWrite + Unpin>(s: &mut S, r: Reply) -> Result<()> {
    s.write_all(&[5, r as u8, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    Ok(())
}

/// `ferry socks5 RELAY --listen ADDR`.
pub(crate) fn run(paths: &Paths, cfg: &Config, args: Socks5Args) -> Result<ExitCode> {
    paths.ensure_state()?;
    // One lifecycle with `connect`: `ferry disconnect` stops the proxy too (SIGTERM).
    let _pid_file = crate::lifecycle::PidFile::claim(paths, "socks5")?;
    let shown = crate::session::relay_label(args.relay.as_deref());
    crate::lifecycle::record_start(paths, "socks5", shown, false);
    let result = proxy(paths, cfg, args);
    if let Err(e) = &result {
        crate::lifecycle::record_failed_start(paths, e, false);
    }
    result
}

fn proxy(paths: &Paths, cfg: &Config, args: Socks5Args) -> Result<ExitCode> {
    let mut setup = prepare(paths, cfg, args.relay.as_deref(), &args.auto)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        crate::session::open_first(&mut setup).await?;
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        // Handed from engine to engine: the socket they follow the network with.
        let mut udp = Some(relay_socket(setup.endpoint).await?);
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
        let wake = Arc::new(Notify::new());
        let accept = tokio::spawn(accept_loop(listener, cmd_tx, wake.clone()));
        tracing::info!(listen = %args.listen, relay = %setup.relay.name, "SOCKS5 proxy ready");
        // Like `connect`: a session gone with allowance left is followed by a new one (the
        // proxy keeps listening; connections through the old session end).
        let r = crate::session::run_sessions(&mut setup, async |setup, old| {
            if old.is_some_and(|o| o.endpoint != setup.relay.endpoint) {
                // Failover: another relay, another socket.
                udp = Some(relay_socket(setup.endpoint).await?);
            }
            let sock = udp.take().context("no relay socket (internal)")?;
            let mut engine = crate::session::engine(setup, sock, "socks5", paths)?;
            let r = drive(&mut engine, new_stack(&setup.relay)?, &mut cmd_rx, &wake).await;
            udp = Some(engine.socket());
            Ok((engine, r))
        })
        .await;
        accept.abort();
        r
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The user-space TCP/IP stack on the session's tunnel addresses.
fn new_stack(relay: &crate::config::Relay) -> Result<Stack> {
    let mut seed = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| anyhow::anyhow!("no randomness"))?;
    Ok(Stack::new(
        relay.addr_v4(),
        relay.addr_v6(),
        usize::from(relay.mtu),
        relay.dns.clone(),
        u64::from_le_bytes(seed),
        smol_now(),
    ))
}

fn smol_now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::now()
}

async fn drive(
    engine: &mut Engine,
    mut stack: Stack,
    cmds: &mut mpsc::UnboundedReceiver<Command>,
    wake: &Notify,
) -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut net = vec![0u8; 65536];
    loop {
        let delay = stack.poll_delay(smol_now());
        let udp = engine.socket();
        tokio::select! {
            r = udp.recv(&mut net) => match r {
                Ok(n) => {
                    for p in engine.handle_datagram(&net[..n]).await {
                        stack.receive(p);
                    }
                }
                Err(e) => tracing::trace!(error = %e, "udp recv"),
            },
            Some(c) = cmds.recv() => stack.command(c, smol_now()),
            () = wake.notified() => {}
            () = tokio::time::sleep(delay) => {}
            _ = tick.tick() => engine.on_tick().await,
            _ = term.recv() => engine.close().await,
            _ = int.recv() => engine.close().await,
        }
        stack.poll(smol_now());
        for p in stack.take_outgoing() {
            engine.send_inner(&p).await;
        }
        if let Some(f) = engine.failure() {
            bail!("{f}");
        }
        if engine.closed() {
            tracing::info!(open = stack.connections(), "SOCKS5 proxy stopped");
            return Ok(());
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    cmds: mpsc::UnboundedSender<Command>,
    wake: Arc<Notify>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let cmds = cmds.clone();
        let wake = wake.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, cmds, wake).await {
                tracing::debug!(error = %format!("{e:#}"), "socks connection");
            }
        });
    }
}

async fn serve(
    mut stream: TcpStream,
    cmds: mpsc::UnboundedSender<Command>,
    wake: Arc<Notify>,
) -> Result<()> {
    let _ = stream.set_nodelay(true);
    if !handshake(&mut stream).await? {
        return Ok(());
    }
    let target = match read_request(&mut stream).await? {
        Ok(t) => t,
        Err(r) => return write_reply(&mut stream, r).await,
    };
    let dst = match target {
        Target::Ip(a) => a,
        Target::Name(name, port) => {
            let (tx, rx) = oneshot::channel();
            cmds.send(Command::Resolve { name, reply: tx })?;
            wake.notify_one();
            match rx.await? {
                Ok(ips) => match ips.first() {
                    Some(ip) => SocketAddr::new(*ip, port),
                    None => return write_reply(&mut stream, Reply::HostUnreachable).await,
                },
                Err(e) => {
                    tracing::debug!(error = e, "resolution failed");
                    return write_reply(&mut stream, Reply::HostUnreachable).await;
                }
            }
        }
    };
    let (to_net_tx, to_net_rx) = mpsc::channel::<Vec<u8>>(16);
    let (from_net_tx, mut from_net_rx) = mpsc::channel::<Vec<u8>>(16);
    let (ready_tx, ready_rx) = oneshot::channel();
    cmds.send(Command::Connect {
        dst,
        to_net: to_net_rx,
        from_net: from_net_tx,
        ready: ready_tx,
    })?;
    wake.notify_one();
    match ready_rx.await? {
        Ok(()) => write_reply(&mut stream, Reply::Succeeded).await?,
        Err(e) => {
            tracing::debug!(error = e, "connect through the tunnel failed");
            let code = if e == crate::stack::NOT_ALLOWED {
                Reply::ConnectionNotAllowed
            } else if e.contains("refused") {
                Reply::ConnectionRefused
            } else if e.contains("family") || e.contains("timed out") {
                Reply::HostUnreachable
            } else {
                Reply::GeneralFailure
            };
            return write_reply(&mut stream, code).await;
        }
    }
    let (mut rd, mut wr) = stream.into_split();
    let up_wake = wake.clone();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_net_tx.send(buf[..n].to_vec()).await.is_err() {
                        break;
                    }
                    up_wake.notify_one();
                }
            }
        }
        drop(to_net_tx);
        up_wake.notify_one();
    });
    while let Some(chunk) = from_net_rx.recv().await {
        wake.notify_one();
        if wr.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
    let _ = up.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn request(bytes: &[u8]) -> std::result::Result<Target, Reply> {
        let mut r = bytes;
        read_request(&mut r).await.unwrap()
    }

    #[tokio::test]
    async fn greeting_accepts_no_auth_only() {
        let (mut a, mut b) = tokio::io::duplex(64);
        b.write_all(&[5, 2, 2, 0]).await.unwrap();
        assert!(handshake(&mut a).await.unwrap());
        let mut ans = [0u8; 2];
        b.read_exact(&mut ans).await.unwrap();
        assert_eq!(ans, [5, 0]);
        b.write_all(&[5, 1, 2]).await.unwrap();
        assert!(!handshake(&mut a).await.unwrap());
        b.read_exact(&mut ans).await.unwrap();
        assert_eq!(ans, [5, 0xff]);
        b.write_all(&[4, 1, 0]).await.unwrap();
        assert!(handshake(&mut a).await.is_err());
    }

    #[tokio::test]
    async fn requests_parse_for_ipv4_ipv6_and_names() {
        assert_eq!(
            request(&[5, 1, 0, 1, 203, 0, 113, 2, 0x1f, 0x40]).await,
            Ok(Target::Ip("203.0.113.2:8000".parse().unwrap()))
        );
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend("2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend([0, 80]);
        assert_eq!(
            request(&v6).await,
            Ok(Target::Ip("[2001:db8::2]:80".parse().unwrap()))
        );
        let mut name = vec![5, 1, 0, 3, 11];
        name.extend(b"example.com");
        name.extend([1, 187]);
        assert_eq!(
            request(&name).await,
            Ok(Target::Name("example.com".into(), 443))
        );
    }

    #[tokio::test]
    async fn bind_udp_and_unknown_address_types_are_refused() {
        assert_eq!(
            request(&[5, 2, 0, 1, 1, 2, 3, 4, 0, 80]).await,
            Err(Reply::CommandNotSupported)
        );
        assert_eq!(
            request(&[5, 3, 0, 1, 1, 2, 3, 4, 0, 80]).await,
            Err(Reply::CommandNotSupported)
        );
        assert_eq!(
            request(&[5, 1, 0, 9]).await,
            Err(Reply::AddressTypeNotSupported)
        );
        assert_eq!(
            request(&[5, 1, 0, 3, 0, 0, 80]).await,
            Err(Reply::HostUnreachable)
        );
        let mut truncated: &[u8] = &[5, 1, 0, 1, 1];
        assert!(read_request(&mut truncated).await.is_err());
    }

    #[tokio::test]
    async fn replies_have_the_rfc_layout() {
        let mut out = Vec::new();
        write_reply(&mut out, Reply::ConnectionRefused)
            .await
            .unwrap();
        assert_eq!(out, [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
    }
}
