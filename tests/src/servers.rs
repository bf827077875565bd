//! Tiny TCP/UDP services run in-process on sockets created inside a namespace, and their clients.
//!
//! TCP protocol (one request per connection, answers start with `<banner> <peer addr seen>`):
//! - `GET <n>\n` -> `<banner> <peer>\n` then `n` pattern bytes (byte `i` is `i % 251`);
//! - `PUT <n>\n` + `n` pattern bytes -> `<banner> <peer> GOT <n> OK|BAD\n`;
//! - `HELLO\n` -> `<banner> <peer>\n` (a probe).
//!
//! UDP echo: every datagram is answered with `<banner> <peer>\n` followed by the payload.
//! Servers record every peer address they saw, so a test can assert the source the internet host
//! observed (e.g. the router's address after masquerading, never the client's tunnel address).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::netns::Ns;

/// The byte at offset `i` of every transfer.
pub fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

type Seen = Arc<Mutex<Vec<SocketAddr>>>;

/// A TCP service listening inside a namespace; stops on drop.
#[derive(Debug)]
pub struct TcpService {
    addr: SocketAddr,
    seen: Seen,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpService {
    /// Listens on `bind` inside `ns` (`[::]:p` is dual-stack) answering with `banner`.
    pub fn start(ns: &Ns, bind: SocketAddr, banner: &str) -> Result<Self> {
        let listener = ns
            .enter(|| TcpListener::bind(bind))?
            .with_context(|| format!("bind {bind}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let seen: Seen = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2, banner) = (seen.clone(), stop.clone(), banner.to_owned());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, peer)) => {
                        let peer = canonical(peer);
                        seen2.lock().unwrap_or_else(|e| e.into_inner()).push(peer);
                        let banner = banner.clone();
                        std::thread::spawn(move || {
                            let _ = serve_tcp(s, peer, &banner);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self {
            addr,
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every peer address that connected so far (IPv4-mapped addresses unmapped).
    pub fn seen(&self) -> Vec<SocketAddr> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for TcpService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_tcp(s: TcpStream, peer: SocketAddr, banner: &str) -> Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_nonblocking(false)?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|n| n.parse::<u64>().ok()),
    ) {
        (Some("GET"), Some(n)) => {
            w.write_all(format!("{banner} {peer}\n").as_bytes())?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut off = 0u64;
            while off < n {
                let k = (n - off).min(buf.len() as u64) as usize;
                for (j, b) in buf[..k].iter_mut().enumerate() {
                    *b = pattern(off + j as u64);
                }
                w.write_all(&buf[..k])?;
                off += k as u64;
            }
        }
        (Some("PUT"), Some(n)) => {
            let (got, ok) = read_pattern(&mut r, 0, n)?;
            let verdict = if ok && got == n { "OK" } else { "BAD" };
            w.write_all(format!("{banner} {peer} GOT {got} {verdict}\n").as_bytes())?;
        }
        _ => w.write_all(format!("{banner} {peer}\n").as_bytes())?,
    }
    w.flush()?;
    let _ = w.shutdown(Shutdown::Write);
    Ok(())
}

/// A UDP echo service inside a namespace; stops on drop.
#[derive(Debug)]
pub struct UdpEcho {
    addr: SocketAddr,
    seen: Seen,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Binds `bind` inside `ns` and echoes with `banner`.
    pub fn start(ns: &Ns, bind: SocketAddr, banner: &str) -> Result<Self> {
        let sock = ns
            .enter(|| UdpSocket::bind(bind))?
            .with_context(|| format!("bind udp {bind}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        let seen: Seen = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2, banner) = (seen.clone(), stop.clone(), banner.to_owned());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let seen_peer = canonical(peer);
                seen2
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(seen_peer);
                let mut out = format!("{banner} {seen_peer}\n").into_bytes();
                out.extend_from_slice(&buf[..n]);
                let _ = sock.send_to(&out, peer);
            }
        });
        Ok(Self {
            addr,
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every peer address seen so far.
    pub fn seen(&self) -> Vec<SocketAddr> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Result of a [`fetch`].
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The service's banner.
    pub banner: String,
    /// The source address the service saw for this connection.
    pub peer_seen: SocketAddr,
    /// Bytes received and verified against [`pattern`].
    pub bytes: u64,
}

/// Connects from inside `ns` (the connect happens there, the transfer on the calling thread).
pub fn connect(ns: &Ns, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let s = ns
        .enter(|| TcpStream::connect_timeout(&addr, timeout))?
        .with_context(|| format!("connect {addr} from {}", ns.name()))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// Downloads `n` bytes from a [`TcpService`]; fails unless all `n` arrive intact within `timeout`
/// per read.
pub fn fetch(ns: &Ns, addr: SocketAddr, n: u64, timeout: Duration) -> Result<Fetched> {
    let mut s = connect(ns, addr, timeout)?;
    s.write_all(format!("GET {n}\n").as_bytes())?;
    let mut r = BufReader::new(s);
    let (banner, peer_seen) = read_header(&mut r)?;
    let (bytes, ok) = read_pattern(&mut r, 0, u64::MAX)?;
    ensure!(ok, "fetch from {addr}: corrupted data");
    ensure!(bytes == n, "fetch from {addr}: got {bytes} of {n} bytes");
    Ok(Fetched {
        banner,
        peer_seen,
        bytes,
    })
}

/// A download from a [`TcpService`] read in steps (to change the network mid-stream).
pub struct Download {
    r: BufReader<TcpStream>,
    /// Bytes received and verified so far.
    pub got: u64,
    /// Bytes asked for.
    pub total: u64,
}

impl Download {
    /// Connects from `ns` and asks for `total` bytes (`timeout` per connect and read).
    pub fn start(ns: &Ns, addr: SocketAddr, total: u64, timeout: Duration) -> Result<Self> {
        let mut s = connect(ns, addr, timeout)?;
        s.write_all(format!("GET {total}\n").as_bytes())?;
        let mut r = BufReader::new(s);
        read_header(&mut r)?;
        Ok(Self { r, got: 0, total })
    }

    /// Reads (verifying the pattern) until `upto` bytes arrived in all.
    pub fn read_to(&mut self, upto: u64) -> Result<()> {
        let want = upto.min(self.total).saturating_sub(self.got);
        let (k, ok) = read_pattern(&mut self.r, self.got, want)?;
        ensure!(ok, "corrupted data after byte {}", self.got);
        self.got += k;
        ensure!(k == want, "the stream ended at {} of {upto}", self.got);
        Ok(())
    }

    /// A new per-read timeout.
    pub fn set_timeout(&self, timeout: Duration) -> Result<()> {
        Ok(self.r.get_ref().set_read_timeout(Some(timeout))?)
    }
}

/// Uploads `n` pattern bytes; returns the peer address the service saw once it confirmed all.
pub fn upload(ns: &Ns, addr: SocketAddr, n: u64, timeout: Duration) -> Result<SocketAddr> {
    let mut s = connect(ns, addr, timeout)?;
    s.write_all(format!("PUT {n}\n").as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    while off < n {
        let k = (n - off).min(buf.len() as u64) as usize;
        for (j, b) in buf[..k].iter_mut().enumerate() {
            *b = pattern(off + j as u64);
        }
        s.write_all(&buf[..k])?;
        off += k as u64;
    }
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let f: Vec<&str> = line.split_whitespace().collect();
    ensure!(f.len() == 5 && f[2] == "GOT", "bad upload answer {line:?}");
    ensure!(
        f[3] == n.to_string() && f[4] == "OK",
        "upload to {addr} incomplete: {line:?}"
    );
    Ok(f[1].parse()?)
}

/// Asks a TCP service for its banner; `None` when nothing answered within `timeout`.
pub fn probe_tcp(ns: &Ns, addr: SocketAddr, timeout: Duration) -> Option<(String, SocketAddr)> {
    let mut s = connect(ns, addr, timeout).ok()?;
    s.write_all(b"HELLO\n").ok()?;
    read_header(&mut BufReader::new(s)).ok()
}

/// Sends one datagram to a [`UdpEcho`] from inside `ns`; returns (banner, peer seen) of the answer.
pub fn probe_udp(ns: &Ns, addr: SocketAddr, timeout: Duration) -> Option<(String, SocketAddr)> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .ok()?;
    let sock = ns.enter(|| UdpSocket::bind(bind)).ok()?.ok()?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    let payload = b"ferry-probe";
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        sock.send_to(payload, addr).ok()?;
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if from == addr {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let (head, body) = text.split_once('\n')?;
            if body.as_bytes() == payload {
                return parse_header(head).ok();
            }
        }
    }
    None
}

/// One ICMP echo from inside `ns` (`ping -c1 -W<secs>`): `Ok(true)` if answered, `Ok(false)` if
/// not, `Err` if ping itself failed (missing binary, bad address), so a probe cannot pass vacuously.
pub fn ping(ns: &Ns, ip: IpAddr, secs: u32) -> Result<bool> {
    let out = ns.exec_unchecked(&[
        "ping",
        "-n",
        "-q",
        "-c1",
        &format!("-W{secs}"),
        &ip.to_string(),
    ])?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!(
            "ping {ip} in {} failed: {}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

fn read_header(r: &mut impl BufRead) -> Result<(String, SocketAddr)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    parse_header(line.trim_end())
}

fn parse_header(line: &str) -> Result<(String, SocketAddr)> {
    let mut it = line.split_whitespace();
    let (Some(b), Some(p)) = (it.next(), it.next()) else {
        bail!("bad header {line:?}")
    };
    Ok((
        b.to_owned(),
        p.parse().with_context(|| format!("bad peer in {line:?}"))?,
    ))
}

/// Reads up to `max` bytes (until EOF) checking the pattern from offset `from`; returns
/// (count, intact).
fn read_pattern(r: &mut impl Read, from: u64, max: u64) -> Result<(u64, bool)> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut off, mut ok) = (0u64, true);
    while off < max {
        let want = (max - off).min(buf.len() as u64) as usize;
        let k = r.read(&mut buf[..want])?;
        if k == 0 {
            break;
        }
        ok &= buf[..k]
            .iter()
            .enumerate()
            .all(|(j, b)| *b == pattern(from + off + j as u64));
        off += k as u64;
    }
    Ok((off, ok))
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Where a SOCKS5 CONNECT goes.
pub enum SocksDst<'a> {
    /// An address.
    Ip(SocketAddr),
    /// A name the proxy resolves.
    Name(&'a str, u16),
}

/// SOCKS5 CONNECT (from `ns` to the proxy at `proxy`) + `GET n` to the data service;
/// returns (banner line, verified byte count), or the SOCKS reply code if the proxy refused.
#[allow(clippy::unwrap_used)]
pub fn socks_fetch(
    ns: &Ns,
    proxy: &str,
    dst: SocksDst<'_>,
    n: u64,
) -> std::result::Result<(String, u64), u8> {
    let mut s = ns.enter(|| TcpStream::connect(proxy)).unwrap().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut a = [0u8; 2];
    s.read_exact(&mut a).unwrap();
    assert_eq!(a, [5, 0]);
    let mut req = vec![5, 1, 0];
    match dst {
        SocksDst::Ip(SocketAddr::V4(v4)) => {
            req.push(1);
            req.extend(v4.ip().octets());
            req.extend(v4.port().to_be_bytes());
        }
        SocksDst::Ip(SocketAddr::V6(v6)) => {
            req.push(4);
            req.extend(v6.ip().octets());
            req.extend(v6.port().to_be_bytes());
        }
        SocksDst::Name(name, port) => {
            req.extend([3, name.len() as u8]);
            req.extend(name.as_bytes());
            req.extend(port.to_be_bytes());
        }
    }
    s.write_all(&req).unwrap();
    let mut rep = [0u8; 10];
    s.read_exact(&mut rep).unwrap();
    if rep[1] != 0 {
        return Err(rep[1]);
    }
    s.write_all(format!("GET {n}\n").as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let nl = all.iter().position(|b| *b == b'\n').unwrap();
    let banner = String::from_utf8_lossy(&all[..nl]).into_owned();
    let body = &all[nl + 1..];
    for (i, b) in body.iter().enumerate() {
        assert_eq!(*b, pattern(i as u64), "corrupted byte {i}");
    }
    Ok((banner, body.len() as u64))
}
