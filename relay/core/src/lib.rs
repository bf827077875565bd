//! Sans-IO relay core: WireGuard peer table around boringtun, cryptokey routing, egress policy, rate limits.
