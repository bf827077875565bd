//! Tokio shell driving the relay core: UDP socket, TUN or userspace (smoltcp) egress, timers.
