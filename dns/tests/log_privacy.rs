//! The privacy floor: query names never reach the logs, even with a TRACE filter.
//! Its own test binary: tracing caches callsite interest process-wide, so a test running
//! concurrently without a subscriber could otherwise hide this test's TRACE events.
#![cfg(feature = "testserver")]
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

#[test]
fn canary_name_never_appears_in_logs_even_at_trace() {
    // Current-thread runtime + thread-local subscriber: every task (forwarder, resolver,
    // upstream test server) logs into `buf`, filtered exactly as production filters.
    let buf = Capture::default();
    let writer = buf.clone();
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry()
        .with(ferry_telemetry::logging::filter("trace").unwrap())
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false),
        );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let s = setup().await;
            let mut client = udp_client(s.addr).await;
            ask(&mut client, "canary.ferry.test.", RecordType::A).await;
            ask(&mut client, "canary.ferry.test.", RecordType::A).await;
            ask(&mut client, "canary-missing.ferry.test.", RecordType::AAAA).await;
            let mut tcp = tcp_client(s.addr).await;
            ask(&mut tcp, "canary.ferry.test.", RecordType::A).await;
            let dead = std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let (addr, _, _stop) = start_forwarder(&config(dead)).await;
            ask(
                &mut udp_client(addr).await,
                "canary.ferry.test.",
                RecordType::A,
            )
            .await;
        });
    });
    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("dns forwarder running"),
        "capture works:\n{logs}"
    );
    assert!(
        logs.contains("dns answered"),
        "trace events captured:\n{logs}"
    );
    let lower = logs.to_lowercase();
    for secret in ["canary", "203.0.113.7", "ferry.test"] {
        assert!(
            !lower.contains(secret),
            "{secret} leaked into logs:\n{logs}"
        );
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
