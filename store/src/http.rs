//! The one HTTP/1.1 client for the ledger API, shared by the receipt submitter (agent and
//! client) and the client's ledger commands: `http://` or, with the `https` feature, `https://`
//! (rustls with ring; certificates checked against the bundled webpki roots, or only against
//! a configured CA file for a ledger with a private CA).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::submit::{BoxError, SubmitError};

/// A parsed ledger base URL: `http[s]://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerUrl {
    https: bool,
    /// Host name or address (TLS server name).
    host: String,
    /// `host:port` to connect to and send as `Host`.
    authority: String,
    /// Path prefix without a trailing slash (`""` or `/api`).
    prefix: String,
}

impl LedgerUrl {
    /// Parses `http://10.0.0.5:8080`, `https://ledger.example/api`, `http://[fd00::1]:7878`.
    pub fn parse(url: &str) -> Result<Self, SubmitError> {
        let bad = || SubmitError::BadUrl(url.to_owned());
        let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            _ => return Err(bad()),
        };
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || authority.contains('@') {
            return Err(bad());
        }
        let default_port = if https { 443 } else { 80 };
        let port_of = |p: &str| p.parse::<u16>().map_err(|_| bad());
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => port_of(p)?,
                None if after.is_empty() => default_port,
                None => return Err(bad()),
            };
            (h.to_owned(), port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h.to_owned(), port_of(p)?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() || (host.contains(':') && !authority.starts_with('[')) {
            return Err(bad());
        }
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        };
        Ok(Self {
            https,
            host,
            authority,
            prefix,
        })
    }

    /// Whether the URL is `https://`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

/// HTTP(S) client for one ledger.
#[derive(Clone)]
pub struct LedgerClient {
    url: LedgerUrl,
    timeout: Duration,
    #[cfg(feature = "https")]
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for LedgerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerClient")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl LedgerClient {
    /// A client for `url`; `ca_file` (PEM) replaces the bundled roots for `https://`. Each
    /// request must finish within `timeout`.
    pub fn new(url: &str, ca_file: Option<&Path>, timeout: Duration) -> Result<Self, SubmitError> {
        let url = LedgerUrl::parse(url)?;
        #[cfg(feature = "https")]
        let tls = if url.https {
            Some(tls_connector(ca_file)?)
        } else {
            None
        };
        #[cfg(not(feature = "https"))]
        if url.https || ca_file.is_some() {
            return Err(SubmitError::BadUrl(format!(
                "{}: https:// ledgers need ferry built with the https feature (small router \
                 builds leave it out); use http:// to a ledger or TLS proxy on the LAN",
                url.authority
            )));
        }
        Ok(Self {
            url,
            timeout,
            #[cfg(feature = "https")]
            tls,
        })
    }

    /// The parsed URL.
    pub fn url(&self) -> &LedgerUrl {
        &self.url
    }

    /// One request: `method` on prefix + `path`, JSON `body`; returns the status and body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Bytes), SubmitError> {
        match tokio::time::timeout(self.timeout, self.exchange(method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(SubmitError::Transport(
                format!(
                    "no answer from {} within {:?}",
                    self.url.authority, self.timeout
                )
                .into(),
            )),
        }
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Bytes), SubmitError> {
        let stream = TcpStream::connect(&self.url.authority)
            .await
            .map_err(|e| transport(format!("connecting to {}", self.url.authority), e))?;
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url.prefix))
            .header(HOST, self.url.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| SubmitError::Transport(Box::new(e)))?;
        #[cfg(feature = "https")]
        if let Some(tls) = &self.tls {
            let name = rustls_pki_types::ServerName::try_from(self.url.host.clone())
                .map_err(|e| transport(format!("server name {:?}", self.url.host), e))?;
            let stream = tls
                .connect(name, stream)
                .await
                .map_err(|e| transport(format!("TLS with {}", self.url.authority), e))?;
            return send(stream, req).await;
        }
        send(stream, req).await
    }
}

async fn send<S>(io: S, req: Request<Full<Bytes>>) -> Result<(u16, Bytes), SubmitError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| SubmitError::Transport(Box::new(e)))?;
    let conn = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| SubmitError::Transport(Box::new(e)))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| SubmitError::Transport(Box::new(e)))?
        .to_bytes();
    conn.abort();
    Ok((status, bytes))
}

/// A transport error that says what was being done, keeping the cause as its source.
fn transport(what: String, e: impl std::error::Error + Send + Sync + 'static) -> SubmitError {
    #[derive(Debug, thiserror::Error)]
    #[error("{what}")]
    struct Step {
        what: String,
        #[source]
        source: BoxError,
    }
    SubmitError::Transport(Box::new(Step {
        what,
        source: Box::new(e),
    }))
}

#[cfg(feature = "https")]
fn tls_connector(ca_file: Option<&Path>) -> Result<tokio_rustls::TlsConnector, SubmitError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(f) => {
            let bad =
                |e: String| SubmitError::BadUrl(format!("ledger CA file {}: {e}", f.display()));
            for cert in CertificateDer::pem_file_iter(f).map_err(|e| bad(e.to_string()))? {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no certificates found".into()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SubmitError::BadUrl(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ledger_urls_parse_with_scheme_port_and_prefix() {
        let u = LedgerUrl::parse("https://ledger.example/api/").unwrap();
        assert!(u.is_https());
        assert_eq!(
            (u.authority(), u.prefix.as_str()),
            ("ledger.example:443", "/api")
        );
        let u = LedgerUrl::parse("http://10.0.0.5:8080").unwrap();
        assert_eq!((u.authority(), u.is_https()), ("10.0.0.5:8080", false));
        let u = LedgerUrl::parse("http://[fd00::1]:7878").unwrap();
        assert_eq!(
            (u.authority(), u.host.as_str()),
            ("[fd00::1]:7878", "fd00::1")
        );
        for bad in [
            "ftp://x",
            "http://",
            "https://:443",
            "http://u@h",
            "http://h:99999",
            "h:1",
        ] {
            assert!(LedgerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
