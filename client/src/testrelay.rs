//! A minimal paid relay for tests (unit tests and the `ferry-test-relay` example used by the
//! netns tests): one WireGuard peer (boringtun), ferry-metering's `RelayHub` answering the
//! control protocol, and instead of an egress it echoes every UDP datagram sent to port 7
//! (metered up and down like the agent will). `phantom_down` extra bytes are metered for
//! every echoed packet without being sent: a relay that over-claims.
//! Test support only: never part of the `ferry` binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use ferry_metering::{
    CONTROL_PORT, Direction, Message, RelayEvent, RelayHub, SessionRejectReason, Verdict,
    control_datagram, decode, encode, parse_udp, udp_packet,
};
use ferry_receipts::{CoSignedReceipt, SessionId, SessionOffer};
use tokio::net::UdpSocket;

/// The relay's tunnel address (control service).
pub(crate) const RELAY_TUN: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The client's tunnel address.
pub(crate) const CLIENT_TUN: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// UDP port the relay echoes.
pub(crate) const ECHO_PORT: u16 = 7;

/// What the relay did.
#[derive(Default, Debug)]
pub(crate) struct RelayLog {
    /// Co-signed receipts it stored.
    pub(crate) stored: Vec<CoSignedReceipt>,
    /// Session events.
    pub(crate) events: Vec<RelayEvent>,
}

/// Runs the relay forever.
pub(crate) async fn mini_relay(
    sock: UdpSocket,
    hello: Option<UdpSocket>,
    mut tunn: Tunn,
    mut hub: RelayHub<u8>,
    phantom_down: u64,
    log: Arc<Mutex<RelayLog>>,
) {
    let own = [IpAddr::V4(RELAY_TUN)];
    let mut buf = vec![0u8; 65536];
    let mut out = vec![0u8; 65536];
    let mut client: Option<SocketAddr> = None;
    let mut hbuf = vec![0u8; 2048];
    loop {
        let hello_recv = async {
            match &hello {
                Some(h) => h.recv_from(&mut hbuf).await,
                None => std::future::pending().await,
            }
        };
        let (r, h) = tokio::select! {
            r = tokio::time::timeout(Duration::from_millis(50), sock.recv_from(&mut buf)) => (Some(r), None),
            h = hello_recv => (None, Some(h)),
        };
        let now = Instant::now();
        let unix = ferry_store::unix_now();
        let mut to_client: Vec<Vec<u8>> = Vec::new();
        if let (Some(Ok((n, from))), Some(hs)) = (h, &hello) {
            // Bootstrap outside the tunnel: Accept + Address, or Reject.
            if let Ok(Message::Hello(offer)) = decode(&hbuf[..n]) {
                let replies = match open(&mut hub, &offer, now, unix) {
                    Ok(Message::Accept(a)) => {
                        let v6 = "fd77::2".parse().ok();
                        let addr = hub.identity().address(&offer, &a, Some(CLIENT_TUN), v6);
                        vec![Message::Accept(a), addr]
                    }
                    Ok(m) => vec![m],
                    Err(r) => vec![hub.identity().reject(&offer, r)],
                };
                eprintln!(
                    "relay session offer answered outside the tunnel: {:?}",
                    replies[0]
                );
                for m in replies {
                    let _ = hs.send_to(&encode(&m), from).await;
                }
            }
        }
        if let Some(Ok(Ok((n, from)))) = r {
            client = Some(from);
            let mut first = true;
            loop {
                let input: &[u8] = if first { &buf[..n] } else { &[] };
                first = false;
                match tunn.decapsulate(Some(from.ip()), input, &mut out) {
                    TunnResult::WriteToNetwork(b) => {
                        let _ = sock.send_to(b, from).await;
                        continue;
                    }
                    TunnResult::WriteToTunnelV4(p, _) => {
                        let pkt = p.to_vec();
                        handle_inner(
                            &pkt,
                            &own,
                            &mut hub,
                            phantom_down,
                            &log,
                            now,
                            unix,
                            &mut to_client,
                        );
                    }
                    _ => {}
                }
                break;
            }
        }
        hub.handle_timeout(now, unix);
        while let Some((_, m)) = hub.poll_transmit(now, unix) {
            let from = SocketAddr::new(RELAY_TUN.into(), CONTROL_PORT);
            let to = SocketAddr::new(CLIENT_TUN.into(), CONTROL_PORT);
            to_client.extend(udp_packet(from, to, &encode(&m)));
        }
        while let Some((_, e)) = hub.poll_event() {
            eprintln!("relay event {e:?}");
            log.lock().unwrap().events.push(e);
        }
        if let TunnResult::WriteToNetwork(b) = tunn.update_timers(&mut out) {
            if let Some(c) = client {
                let _ = sock.send_to(b, c).await;
            }
        }
        for p in to_client {
            if let (TunnResult::WriteToNetwork(b), Some(c)) =
                (tunn.encapsulate(&p, &mut out), client)
            {
                let _ = sock.send_to(b, c).await;
            }
        }
    }
}

/// Opens the test relay's one session (id 7…7) at the voucher's max price.
fn open(
    hub: &mut RelayHub<u8>,
    offer: &SessionOffer,
    now: Instant,
    unix: u64,
) -> Result<Message, SessionRejectReason> {
    let price = offer.voucher.max_price_micros_per_gib;
    hub.open(0, offer, SessionId([7; 16]), price, 0, now, unix)
}

#[allow(clippy::too_many_arguments)]
fn handle_inner(
    pkt: &[u8],
    own: &[IpAddr],
    hub: &mut RelayHub<u8>,
    phantom_down: u64,
    log: &Mutex<RelayLog>,
    now: Instant,
    unix: u64,
    to_client: &mut Vec<Vec<u8>>,
) {
    if let Some(c) = control_datagram(pkt, own) {
        let reply_to = c.from;
        match decode(c.payload) {
            Ok(Message::Hello(offer)) => {
                let m = match open(hub, &offer, now, unix) {
                    Ok(m) => m,
                    Err(r) => hub.identity().reject(&offer, r),
                };
                eprintln!("relay session offer answered: {m:?}");
                to_client.extend(udp_packet(c.to, reply_to, &encode(&m)));
            }
            _ => {
                if let Some(co) = hub.handle_control(0, c.payload, now) {
                    log.lock().unwrap().stored.push(co);
                    eprintln!("relay stored co-signed receipt seq {}", co.body().seq);
                    if let Some(ack) = hub.persisted(0, co.body().seq) {
                        to_client.extend(udp_packet(c.to, reply_to, &encode(&ack)));
                    }
                }
            }
        }
    } else if let Some((src, dst, payload)) = parse_udp(pkt) {
        if dst.port() == ECHO_PORT
            && hub.on_bytes(0, Direction::Up, pkt.len() as u64, now) == Verdict::Forward
        {
            let Some(reply) = udp_packet(dst, src, payload) else {
                return;
            };
            let v = hub.on_bytes(0, Direction::Down, reply.len() as u64, now);
            if phantom_down > 0 {
                let _ = hub.on_bytes(0, Direction::Down, phantom_down, now);
            }
            if v == Verdict::Forward {
                to_client.push(reply);
            }
        }
    }
}
