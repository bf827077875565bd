//! Test helpers: a minimal HTTP/1.1 GET over hyper, and a real Prometheus server.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod prometheus;

use std::net::SocketAddr;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Response status, content type, headers and body of one request.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

/// `GET http://{addr}{path}`, with `Authorization: Bearer {bearer}` if given.
pub async fn http_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> anyhow::Result<Reply> {
    let auth = bearer.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = auth
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    http_request(addr, hyper::Method::GET, path, &headers).await
}

/// `{method} http://{addr}{path}` with extra request headers, on a fresh connection.
pub async fn http_request(
    addr: SocketAddr,
    method: hyper::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .context("connect")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("handshake")?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await
        .context("request")?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        content_type,
        headers,
        body: String::from_utf8(body.to_vec())?,
    })
}

/// Value of the sample whose series (name plus optional `{labels}`) is exactly `series`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.split_whitespace().next().unwrap().parse().unwrap())
}
