//! Tunnel address pools: each tunnel subnet is split so trusted peers (config, `add-peer`) and
//! paid sessions (allocated by the running agent) never pick the same address. The first
//! quarter of a subnet's host addresses is the trusted pool, the rest the paid pool (a /24:
//! .1-.63 trusted, the relay usually at .1; .64-.254 paid). Subnets with fewer than 8 hosts
//! are not split (both draw from all of it; the agent still skips taken addresses).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferry_relay_core::IpNet;

/// (first host offset, number of host offsets) of `net`: IPv4 without the network and
/// broadcast addresses (for prefixes below /31), IPv6 without the subnet-router anycast address.
pub(crate) fn host_range(net: &IpNet) -> (u128, u128) {
    let bits = u32::from(net.max_prefix_len() - net.prefix_len());
    let size = if bits >= 64 {
        1u128 << 64
    } else {
        1u128 << bits
    };
    match net {
        IpNet::V4(_) if bits >= 2 => (1, size - 2),
        IpNet::V4(_) => (0, size),
        IpNet::V6(_) if size > 1 => (1, size - 1),
        IpNet::V6(_) => (0, 1),
    }
}

/// Host offsets for trusted peers.
pub(crate) fn trusted_range(net: &IpNet) -> (u128, u128) {
    let (first, count) = host_range(net);
    if count < 8 {
        return (first, count);
    }
    (first, count / 4)
}

/// Host offsets for paid sessions.
pub(crate) fn paid_range(net: &IpNet) -> (u128, u128) {
    let (first, count) = host_range(net);
    if count < 8 {
        return (first, count);
    }
    let trusted = count / 4;
    (first + trusted, count - trusted)
}

/// The address at host offset `off` of `net`.
pub(crate) fn host_at(net: &IpNet, off: u128) -> Option<IpAddr> {
    match net {
        IpNet::V4(n) => {
            let base = u32::from(n.network());
            Some(IpAddr::V4(Ipv4Addr::from(
                base.checked_add(u32::try_from(off).ok()?)?,
            )))
        }
        IpNet::V6(n) => Some(IpAddr::V6(Ipv6Addr::from(
            u128::from(n.network()).checked_add(off)?,
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pools_split_each_subnet_and_never_overlap() {
        let v4: IpNet = "10.77.0.1/24".parse().unwrap();
        assert_eq!(trusted_range(&v4), (1, 63));
        assert_eq!(paid_range(&v4), (64, 191));
        assert_eq!(host_at(&v4, 63).unwrap().to_string(), "10.77.0.63");
        assert_eq!(host_at(&v4, 64).unwrap().to_string(), "10.77.0.64");
        assert_eq!(host_at(&v4, 254).unwrap().to_string(), "10.77.0.254");
        let v6: IpNet = "fd77::1/64".parse().unwrap();
        let (tf, tc) = trusted_range(&v6);
        let (pf, pc) = paid_range(&v6);
        assert_eq!(tf + tc, pf);
        assert_eq!(pf + pc, 1 << 64);
        // Tiny subnets are shared.
        let tiny: IpNet = "10.77.0.1/29".parse().unwrap();
        assert_eq!(trusted_range(&tiny), paid_range(&tiny));
    }
}
