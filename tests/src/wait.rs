//! Polling helpers with timeouts: conditions, TCP ports, UDP listeners.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::netns::Ns;

/// Polls `f` every 50 ms until it returns `Some`, failing after `timeout` with `what` in the error.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls a boolean condition; see [`wait_for`].
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    wait_for(timeout, what, || f().then_some(()))
}

/// Waits until a TCP connect from inside `ns` to `addr` succeeds.
pub fn wait_tcp_port(ns: &Ns, addr: SocketAddr, timeout: Duration) -> Result<()> {
    wait_until(
        timeout,
        &format!("tcp {addr} open in {}", ns.name()),
        || {
            ns.enter(|| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok())
                .unwrap_or(false)
        },
    )
}

/// Waits until some socket in `ns` listens on UDP `port` (per `ss -uln`).
pub fn wait_udp_listen(ns: &Ns, port: u16, timeout: Duration) -> Result<()> {
    let needle = format!(":{port} ");
    wait_until(
        timeout,
        &format!("udp port {port} bound in {}", ns.name()),
        || {
            ns.exec(&["ss", "-Huln"])
                .is_ok_and(|out| out.lines().any(|l| l.contains(&needle)))
        },
    )
}

/// Waits until interface `ifname` exists in `ns`.
pub fn wait_link(ns: &Ns, ifname: &str, timeout: Duration) -> Result<()> {
    wait_until(timeout, &format!("link {ifname} in {}", ns.name()), || {
        ns.ip(&["link", "show", ifname]).is_ok()
    })
}
