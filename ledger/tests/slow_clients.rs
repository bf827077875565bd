//! Slow and idle clients against the real server loop (`ferry_ledger::http::serve` on a
//! loopback socket): a slowloris crowd, idle keep-alive connections, a stalled body, and the
//! connection cap. Each test would hang or fail on a server without these limits.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_ledger::Ledger;
use ferry_ledger::http::{AppState, ServeLimits, router};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Starts a ledger on 127.0.0.1:0 with `limits`; returns its address and a stop handle.
async fn start(limits: ServeLimits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let ledger = Ledger::new(common::sqlite(), common::ledger_key(), common::params());
    let state = AppState {
        ledger: Arc::new(ledger),
        admin_token_hash: None,
        open_registration: false,
        max_body_bytes: 64 * 1024,
        clock: Arc::new(|| common::NOW),
        join: Default::default(),
        directory: None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ferry_ledger::http::serve(
        vec![listener],
        limits,
        router(state),
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

/// One complete `GET /v1/info` on a fresh connection; returns the status line.
async fn get_info(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /v1/info HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// True when the server has closed `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {} // a 408 reply before the close
        }
    }
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_crowd_does_not_starve_a_normal_request_and_is_dropped() {
    raise_fd_limit();
    let limits = ServeLimits::new(1024, 5, 30);
    let (addr, _stop) = start(limits).await;
    let calm = Instant::now();
    assert!(get_info(addr).await.contains("200"));
    let calm = calm.elapsed();

    // 1000 half-sent requests, each trickling one more header line per second.
    let mut slow = Vec::new();
    for _ in 0..1000 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /v1/info HTTP/1.1\r\nHost: l\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let trickle = {
        let mut slow = std::mem::take(&mut slow);
        tokio::spawn(async move {
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                for s in &mut slow {
                    let _ = s.write_all(b"X-Slow: 1\r\n").await;
                }
            }
            slow
        })
    };
    let t = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(6), get_info(addr))
        .await
        .expect("a normal request under 1000 slow connections is answered within 6 s");
    assert!(status.contains("200"), "{status}");
    eprintln!(
        "calm {calm:?}, under 1000 slow connections {:?}",
        t.elapsed()
    );

    // The header timeout (5 s) closes every trickling connection, although each keeps sending.
    let mut slow = trickle.await.unwrap();
    let mut still_open = 0;
    for s in &mut slow {
        if !closed_within(s, Duration::from_secs(2)).await {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "slow-header connections still open after 10 s"
    );
    // And it recovers by itself.
    assert!(get_info(addr).await.contains("200"));
}

#[tokio::test]
async fn idle_keepalive_and_stalled_body_are_closed() {
    let (addr, _stop) = start(ServeLimits::new(64, 2, 2)).await;
    // Idle after a complete keep-alive exchange: closed after the header timeout.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /v1/info HTTP/1.1\r\nHost: l\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );

    // A body that stops halfway: 408 request_timeout, then closed.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(
            b"POST /v1/receipts HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"receipt\":",
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(6), stalled.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "stalled body still open after 6 s");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
}

#[tokio::test]
async fn connection_cap_holds_and_frees_as_idle_ones_time_out() {
    let (addr, _stop) = start(ServeLimits::new(8, 2, 30)).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The ninth waits for a slot (it is not served while eight are held)...
    let t = Instant::now();
    let ninth = tokio::spawn(get_info(addr));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!ninth.is_finished(), "served beyond the connection cap");
    // ...and is answered once the idle eight are closed by the header timeout.
    let status = tokio::time::timeout(Duration::from_secs(5), ninth)
        .await
        .expect("served after the idle connections timed out")
        .unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    drop(held);
}
