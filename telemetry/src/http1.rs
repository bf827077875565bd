//! A bounded HTTP/1 accept loop on hyper, shared by the agent's metrics server and the ledger.
//!
//! What it guarantees, whatever the service does: at most [`Limits::max_connections`]
//! connections are served at once (further clients wait in the kernel's accept backlog); a
//! connection that has not sent a complete request head within [`Limits::header_read_timeout`]
//! of connecting, or of its previous response (keep-alive idle), is closed; request heads are
//! capped at [`Limits::max_buf_size`]; accept errors such as running out of file descriptors
//! pause the loop instead of spinning; on shutdown the listeners close at once and in-flight
//! requests get [`Limits::drain_timeout`] to finish. Slow request *bodies* are the service's to
//! bound (the ledger times out each request).

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// After shutdown, in-flight requests get this long to finish before their connections are
/// dropped (both servers use it).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-connection read buffer cap (hyper's minimum is 8 KiB): bounds request heads, and so the
/// memory one connection can pin, to 16 KiB; bigger heads get 431 (both servers use it).
pub const MAX_BUF_SIZE: usize = 16 * 1024;

/// Connection limits of one server (shared by all its listeners).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed for a complete request head, from connect or from the previous response.
    pub header_read_timeout: Duration,
    /// Per-connection read buffer (hyper's minimum is 8 KiB); bigger heads get 431.
    pub max_buf_size: usize,
    /// After shutdown, time in-flight requests get before their connections are dropped.
    pub drain_timeout: Duration,
}

/// Serves `service` on every listener until `shutdown` completes or a listener task fails.
/// `name` labels the log lines ("metrics server", "ledger").
pub async fn serve<S, B>(
    name: &'static str,
    listeners: Vec<TcpListener>,
    limits: Limits,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), std::io::Error>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_buf_size);
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        let addr = listener.local_addr().ok();
        tracing::info!(addr = ?addr, "{name} listening");
        servers.spawn(accept_loop(
            name,
            listener,
            http.clone(),
            service.clone(),
            slots.clone(),
            limits.drain_timeout,
            stop_rx.clone(),
        ));
    }
    let first_exit = tokio::select! {
        () = shutdown => None,
        exit = servers.join_next() => exit,
    };
    let _ = stop_tx.send(true);
    let mut result = flatten(first_exit);
    while let Some(exit) = servers.join_next().await {
        result = result.and(flatten(Some(exit)));
    }
    result
}

/// Accepts on one listener until `stop` turns true (or its sender is gone), one task per
/// connection, holding one of the shared `slots` while it lives.
/// The TCP peer of the connection a request came on (a request extension set by [`serve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

async fn accept_loop<S, B>(
    name: &'static str,
    listener: TcpListener,
    http: http1::Builder,
    service: S,
    slots: Arc<Semaphore>,
    drain_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let Ok(slot) = slot else { break }; // the semaphore is never closed
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                drop(slot);
                tokio::select! {
                    () = accept_error_pause(name, e) => continue,
                    _ = stop.wait_for(|stopped| *stopped) => break,
                }
            }
        };
        let svc = service.clone();
        // Handlers learn who is asking (the ledger rate-limits self-registration per source
        // and compares a relay's announced address with the one it announced from).
        let with_peer = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            svc.call(req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), with_peer));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(%peer, error = %e, "{name}: connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("{name}: dropping connections still busy after shutdown");
    }
}

/// Per-connection accept errors (the peer gave up) are ignored; others (e.g. out of file
/// descriptors) are logged and retried after a second instead of spinning.
async fn accept_error_pause(name: &'static str, e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "{name}: accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn flatten(exit: Option<Result<(), tokio::task::JoinError>>) -> Result<(), std::io::Error> {
    match exit {
        None | Some(Ok(())) => Ok(()),
        Some(Err(join)) => Err(std::io::Error::other(join)),
    }
}
