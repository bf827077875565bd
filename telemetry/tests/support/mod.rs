//! Test helpers: a minimal HTTP/1.1 GET over hyper, and a real Prometheus server.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod prometheus;

use std::net::SocketAddr;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Response status, content type and body of `GET http://{addr}{path}`.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

pub async fn http_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> anyhow::Result<Reply> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .context("connect")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("handshake")?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header(hyper::header::HOST, addr.to_string());
    if let Some(token) = bearer {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await
        .context("request")?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        content_type,
        body: String::from_utf8(body.to_vec())?,
    })
}

/// Value of the sample whose series (name plus optional `{labels}`) is exactly `series`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.split_whitespace().next().unwrap().parse().unwrap())
}
