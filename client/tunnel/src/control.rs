//! The control channel's inner packets: UDP between our tunnel address and the relay's
//! control service, both on [`CONTROL_PORT`].

use std::net::SocketAddr;

use ferry_metering::{CONTROL_PORT, control_datagram, udp_packet};

/// The control-channel endpoints of a paid session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPath {
    /// Our side: our tunnel address, [`CONTROL_PORT`].
    pub local: SocketAddr,
    /// The relay's control service (its tunnel address, [`CONTROL_PORT`]).
    pub remote: SocketAddr,
}

impl ControlPath {
    /// The path between our tunnel address `local` and the relay's control address `remote`.
    pub fn new(local: std::net::IpAddr, remote: std::net::IpAddr) -> Self {
        Self {
            local: SocketAddr::new(local, CONTROL_PORT),
            remote: SocketAddr::new(remote, CONTROL_PORT),
        }
    }

    /// A control frame from us to the relay, as an inner packet (`None`: families differ).
    pub fn wrap(&self, frame: &[u8]) -> Option<Vec<u8>> {
        udp_packet(self.local, self.remote, frame)
    }

    /// The frame inside `pkt` if it is a control datagram from the relay to us.
    pub fn unwrap_incoming<'a>(&self, pkt: &'a [u8]) -> Option<&'a [u8]> {
        let d = control_datagram(pkt, &[self.local.ip()])?;
        (d.from == self.remote).then_some(d.payload)
    }

    /// Whether `pkt` (going into the tunnel) is addressed to the relay's control service.
    pub fn is_outgoing(&self, pkt: &[u8]) -> bool {
        control_datagram(pkt, &[self.remote.ip()]).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(v6: bool) -> ControlPath {
        if v6 {
            ControlPath::new("fd77::2".parse().unwrap(), "fd77::1".parse().unwrap())
        } else {
            ControlPath::new("10.77.0.2".parse().unwrap(), "10.77.0.1".parse().unwrap())
        }
    }

    #[test]
    fn control_frames_round_trip_through_inner_packets_v4_and_v6() {
        for v6 in [false, true] {
            let p = path(v6);
            let out = p.wrap(b"hello frame").unwrap();
            assert!(p.is_outgoing(&out));
            // The relay's answer has the addresses swapped.
            let back = udp_packet(p.remote, p.local, b"answer").unwrap();
            assert_eq!(p.unwrap_incoming(&back), Some(&b"answer"[..]));
            assert!(!p.is_outgoing(&back));
            // Our own outgoing packet is not an incoming control packet.
            assert_eq!(p.unwrap_incoming(&out), None);
        }
    }

    #[test]
    fn other_traffic_is_not_control() {
        let p = path(false);
        let other: SocketAddr = "203.0.113.2:51821".parse().unwrap();
        let pkt = udp_packet(other, p.local, b"x").unwrap();
        assert_eq!(p.unwrap_incoming(&pkt), None);
        let web: SocketAddr = "10.77.0.1:80".parse().unwrap();
        assert!(!p.is_outgoing(&udp_packet(p.local, web, b"x").unwrap()));
        assert!(p.wrap(b"").is_some());
        assert!(
            ControlPath::new("10.77.0.2".parse().unwrap(), "fd77::1".parse().unwrap())
                .wrap(b"x")
                .is_none()
        );
    }
}
