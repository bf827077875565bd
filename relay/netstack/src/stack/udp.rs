//! UDP flows: client datagrams are parsed directly (no smoltcp socket) and replies synthesized.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};

use smoltcp::time::Instant;
use tracing::{debug, trace};

use super::{Event, FlowId, NetStack};
use crate::packet;

pub(super) struct UdpFlow {
    pub(super) client: SocketAddr,
    pub(super) remote: SocketAddr,
    pub(super) queue: VecDeque<Vec<u8>>,
    pub(super) waker: Option<Waker>,
    pub(super) last_active: Instant,
}

impl NetStack {
    /// Next client datagram of UDP `flow`; `Ready(None)` when the flow has ended.
    pub fn poll_udp_datagram(
        &mut self,
        flow: FlowId,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Vec<u8>>> {
        let Some(f) = self.udp.get_mut(&flow) else {
            return Poll::Ready(None);
        };
        match f.queue.pop_front() {
            Some(d) => Poll::Ready(Some(d)),
            None => {
                f.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// A datagram from the outside for UDP `flow`: queue it towards the client.
    pub fn udp_reply(&mut self, flow: FlowId, payload: &[u8], now: Instant) {
        self.now = now;
        let Some(f) = self.udp.get_mut(&flow) else {
            return;
        };
        if payload.len() > packet::max_udp_payload(self.cfg.mtu, &f.remote) {
            trace!(
                flow = flow.0,
                len = payload.len(),
                "dropping oversized UDP reply"
            );
            self.stats.dropped_other += 1;
            return;
        }
        if self.out.len() >= self.cfg.out_queue {
            self.stats.dropped_other += 1;
            return;
        }
        f.last_active = now;
        if let Some(p) = packet::udp_reply(f.client, f.remote, payload) {
            self.out.push_back(p);
        }
    }

    /// The shell's task for UDP `flow` ended (socket error): forget the flow.
    pub fn udp_release(&mut self, flow: FlowId) {
        if let Some(mut f) = self.udp.remove(&flow) {
            self.udp_index.remove(&(f.client, f.remote));
            if let Some(w) = f.waker.take() {
                w.wake();
            }
        }
    }

    pub(super) fn handle_udp(&mut self, client: SocketAddr, remote: SocketAddr, payload: &[u8]) {
        let now = self.now;
        let id = match self.udp_index.get(&(client, remote)) {
            Some(&id) => id,
            None => {
                if self.flow_count() >= self.cfg.max_flows {
                    self.stats.refused_limit += 1;
                    trace!("refusing UDP flow: limit");
                    return;
                }
                if !self.dialable(client, remote) {
                    self.stats.refused_policy += 1;
                    trace!("refusing UDP flow: policy");
                    return;
                }
                let id = self.alloc_flow();
                debug!(flow = id.0, "new UDP flow");
                // Destinations only at TRACE (team rule 6; the privacy canary test runs at DEBUG).
                trace!(flow = id.0, %remote, "UDP flow destination");
                self.stats.udp_opened += 1;
                self.udp.insert(
                    id,
                    UdpFlow {
                        client,
                        remote,
                        queue: VecDeque::new(),
                        waker: None,
                        last_active: now,
                    },
                );
                self.udp_index.insert((client, remote), id);
                let dial = self.cfg.local_service(remote).unwrap_or(remote);
                self.events.push_back(Event::UdpOpen {
                    flow: id,
                    remote: dial,
                });
                id
            }
        };
        let Some(f) = self.udp.get_mut(&id) else {
            return;
        };
        f.last_active = now;
        if f.queue.len() >= self.cfg.udp_queue {
            self.stats.dropped_other += 1;
            return;
        }
        f.queue.push_back(payload.to_vec());
        if let Some(w) = f.waker.take() {
            w.wake();
        }
    }
}
