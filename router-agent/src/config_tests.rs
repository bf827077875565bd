#![allow(clippy::unwrap_used)]
use super::*;

const KEY: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

fn minimal() -> String {
    "[wireguard]\nprivate-key-file = \"wg.key\"\naddress = [\"10.77.0.1/24\", \"fd77::1/64\"]\n"
        .to_owned()
}

fn err(text: &str) -> String {
    format!(
        "{:#}",
        Config::parse(text, Path::new("/etc/ferry")).unwrap_err()
    )
}

#[test]
fn every_agent_example_in_config_dir_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("agent") && name.ends_with(".toml") {
            // Router (small) builds have no DoT/DoH: examples using them must be refused with
            // a message that names the missing feature.
            let text = std::fs::read_to_string(&path).unwrap();
            let encrypted_dns = text.lines().any(|l| {
                let l = l.trim();
                l.starts_with("protocol") && (l.contains("\"tls\"") || l.contains("\"https\""))
            });
            if cfg!(not(feature = "dns-encrypted")) && encrypted_dns {
                let err = Config::load(&path).err();
                let err =
                    err.unwrap_or_else(|| panic!("{name}: DoT/DoH accepted without dns-encrypted"));
                let msg = format!("{err:#}");
                assert!(
                    msg.contains("needs ferry-dns built with the dot feature"),
                    "{name}: {msg}"
                );
                seen += 1;
                continue;
            }
            let v = Config::load(&path).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(!v.address.is_empty(), "{name}");
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "expected agent.example.toml and agent.userspace.example.toml, saw {seen}"
    );
}

#[test]
fn minimal_config_gets_defaults_and_resolves_key_path() {
    let v = Config::parse(&minimal(), Path::new("/etc/ferry")).unwrap();
    assert_eq!(v.listen, "0.0.0.0:51820".parse().unwrap());
    assert_eq!(v.mtu, 1420);
    assert_eq!(v.raw.egress.mode, EgressMode::Tun);
    assert_eq!(v.raw.egress.tun_name, "ferry0");
    assert!(v.raw.egress.masquerade);
    assert_eq!(v.raw.limits.max_peers, 1024);
    assert_eq!(v.private_key_file, Path::new("/etc/ferry/wg.key"));
    assert_eq!(
        v.tunnel_ips(),
        vec![
            "10.77.0.1".parse::<IpAddr>().unwrap(),
            "fd77::1".parse().unwrap()
        ]
    );
}

#[test]
fn bad_values_give_clear_errors() {
    let cases = [
        (
            minimal().replace("10.77.0.1/24", "10.77.0.1/33"),
            "wireguard.address[0]",
        ),
        (minimal() + "listen = \"0.0.0.0:0\"\n", "port must be"),
        (minimal() + "listen = \"nonsense\"\n", "wireguard.listen"),
        (
            minimal() + "mtu = 100\n",
            "wireguard.mtu: 100 is out of range 1280..=9000",
        ),
        (minimal() + "mtu = 70000\n", "wireguard.mtu"),
        (
            minimal() + "[egress]\nallow = [\"300.1.1.1/8\"]\n",
            "egress.allow[0]",
        ),
        (
            minimal() + "[egress]\ntun-name = \"this-name-is-far-too-long\"\n",
            "egress.tun-name",
        ),
        (
            minimal() + "[egress]\nmode = \"kernel\"\n",
            "unknown variant",
        ),
        (
            minimal() + "[egress]\ntunnel-services = [\"sctp/5\"]\n",
            "tunnel-services[0]",
        ),
        (minimal() + "[limits]\nmax-peers = 0\n", "limits.max-peers"),
        (
            minimal() + "[limits]\nhandshake-budget = 100001\n",
            "limits.handshake-budget",
        ),
        (minimal() + "bogus = 1\n", "unknown field"),
        (minimal() + "[peer]\n", "expected a sequence"),
        (minimal() + "[[peer]]\nname = \"x\"\n", "missing field"),
        (
            minimal()
                + "[[peer]]\nname = \"a\"\npublic-key = \"short\"\nallowed-ips = [\"10.77.0.2/32\"]\n",
            "public-key",
        ),
        (
            minimal()
                + &format!(
                    "[[peer]]\nname = \"a\"\npublic-key = \"{KEY}\"\nallowed-ips = [\"10.77.0.2/32\"]\n"
                )
                + &format!(
                    "[[peer]]\nname = \"b\"\npublic-key = \"{KEY}\"\nallowed-ips = [\"10.77.0.3/32\"]\n"
                ),
            "duplicate public-key",
        ),
        (
            minimal()
                + &format!(
                    "[[peer]]\nname = \"a\"\npublic-key = \"{KEY}\"\nallowed-ips = [\"10.77.0.2/40\"]\n"
                ),
            "allowed-ips[0]",
        ),
    ];
    for (text, want) in cases {
        let e = err(&text);
        assert!(e.contains(want), "expected {want:?} in error: {e}");
    }
}

#[test]
fn tun_name_must_be_a_linux_interface_name() {
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "fe:0",
        "fe 0",
        "tab\t",
        "sixteen-chars-xx",
        "ü",
    ] {
        let text = minimal() + &format!("[egress]\ntun-name = {bad:?}\n");
        let e = err(&text);
        assert!(e.contains("egress.tun-name"), "{bad:?}: {e}");
    }
    for good in ["ferry0", "f", "fe.0", "...", "fifteen-chars-x", "wg_-.9"] {
        let text = minimal() + &format!("[egress]\ntun-name = {good:?}\n");
        let v = Config::parse(&text, Path::new("/")).unwrap();
        assert_eq!(v.raw.egress.tun_name, good);
    }
}

#[test]
fn mapped_and_nat64_allow_deny_entries_become_ipv4_networks() {
    let text = minimal()
        + "[egress]\ndeny = [\"::ffff:8.8.8.0/120\", \"2001:db8::/32\"]\n"
        + "allow = [\"64:ff9b::192.168.1.0/120\", \"::ffff:10.1.2.3\"]\n";
    let v = Config::parse(&text, Path::new("/")).unwrap();
    let show = |l: &[IpNet]| l.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(show(&v.deny), ["8.8.8.0/24", "2001:db8::/32"]);
    assert_eq!(show(&v.allow), ["192.168.1.0/24", "10.1.2.3/32"]);
    let policy = ferry_relay_core::EgressPolicy::new(v.policy(Vec::new()), &[]);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        policy.check_addr(ip("8.8.8.8")),
        ferry_relay_core::Verdict::Blocked
    );
    assert_eq!(
        policy.check_addr(ip("192.168.1.9")),
        ferry_relay_core::Verdict::Allow
    );
    assert_eq!(
        policy.check_addr(ip("10.1.2.3")),
        ferry_relay_core::Verdict::Allow
    );
    assert_eq!(
        policy.check_addr(ip("10.1.2.4")),
        ferry_relay_core::Verdict::Blocked
    );
}

#[test]
fn handshake_budget_defaults_to_the_relay_default_and_can_be_lowered() {
    let v = Config::parse(&minimal(), Path::new("/")).unwrap();
    assert_eq!(
        v.raw.limits.handshake_budget,
        ferry_relay_core::DEFAULT_HANDSHAKE_BUDGET
    );
    let text = minimal() + "[limits]\nhandshake-budget = 0\n";
    assert_eq!(
        Config::parse(&text, Path::new("/"))
            .unwrap()
            .raw
            .limits
            .handshake_budget,
        0
    );
}

#[test]
fn ipv4_only_allows_smaller_mtu() {
    let text = "[wireguard]\nprivate-key-file = \"/k\"\naddress = [\"10.77.0.1/24\"]\nmtu = 1000\n";
    assert_eq!(Config::parse(text, Path::new("/")).unwrap().mtu, 1000);
}

#[test]
fn services_and_bare_addresses_parse() {
    let text = minimal()
        + "[egress]\ntunnel-services = [\"udp/53\", \"tcp/53\"]\nallow = [\"192.168.1.5\"]\n";
    let v = Config::parse(&text, Path::new("/")).unwrap();
    assert_eq!(v.tunnel_services.len(), 2);
    assert_eq!(v.allow[0].to_string(), "192.168.1.5/32");
}

#[test]
fn session_limits_default_small_and_refuse_zero_caps() {
    let paid = minimal()
        + "[identity]\nkey-file = \"id.key\"\n[network]\nid = \"00112233445566778899aabbccddeeff\"\n\
           ledger-key = \"0000000000000000000000000000000000000000000000000000000000000000\"\n\
           [paid]\nenabled = true\n";
    // Without a ledger to learn the network price from, the relay must name its own.
    let e = err(&paid);
    assert!(e.contains("paid.price-micros-per-gib"), "{e}");
    let paid = paid + "price-micros-per-gib = 750000\n";
    let cfg = Config::parse(&paid, Path::new("/etc/ferry")).unwrap();
    let limits = cfg.paid.unwrap().limits;
    assert_eq!(limits.price_micros_per_gib, Some(750_000));
    let e = err(&paid.replace("750000", "0"));
    assert!(e.contains("1..2^63"), "{e}");
    assert_eq!((limits.per_voucher, limits.per_client), (2, 2));
    assert_eq!(limits.unused_timeout, std::time::Duration::from_secs(60));
    assert_eq!(limits.min_allowance_bytes, 1 << 20);
    let e = err(&(paid.clone() + "max-sessions-per-voucher = 0\n"));
    assert!(e.contains("max-sessions-per-voucher"), "{e}");
    let e = err(&(paid.clone() + "unused-session-timeout-secs = 0\n"));
    assert!(e.contains("unused-session-timeout-secs"), "{e}");
    let e = err(&(paid + "min-allowance-mib = -1\n"));
    assert!(e.contains("min-allowance-mib"), "{e}");
}

#[test]
fn the_directory_advertises_the_price_sessions_are_sold_at() {
    let paid = minimal()
        + "[identity]\nkey-file = \"id.key\"\n[network]\nid = \"00112233445566778899aabbccddeeff\"\n\
           ledger-key = \"0000000000000000000000000000000000000000000000000000000000000000\"\n\
           ledger-url = \"http://192.0.2.1:7878\"\n[paid]\nenabled = true\n";
    // With a ledger the price may be left to the network.
    let cfg = Config::parse(&paid, Path::new("/etc/ferry")).unwrap();
    assert_eq!(cfg.paid.unwrap().limits.price_micros_per_gib, None);
    // A price set only in [directory] is the session price too.
    let dir = "[directory]\ncountry = \"DE\"\nprice-micros-per-gib = 700000\n";
    let cfg = Config::parse(&(paid.clone() + dir), Path::new("/etc/ferry")).unwrap();
    assert_eq!(cfg.paid.unwrap().limits.price_micros_per_gib, Some(700_000));
    assert_eq!(cfg.directory.unwrap().price_micros_per_gib, Some(700_000));
    // Set only in [paid]: the descriptor carries it.
    let both = paid.clone() + "price-micros-per-gib = 650000\n" + "[directory]\ncountry = \"DE\"\n";
    let cfg = Config::parse(&both, Path::new("/etc/ferry")).unwrap();
    assert_eq!(cfg.directory.unwrap().price_micros_per_gib, Some(650_000));
    // Two different prices: refused, naming both.
    let e = err(&(paid + "price-micros-per-gib = 650000\n" + dir));
    assert!(e.contains("650000") && e.contains("700000"), "{e}");
}

#[test]
fn exit_ports_close_smtp_by_default_and_take_block_or_allow_lists() {
    use ferry_relay_core::{ExitPorts, PortRule, Proto};
    let rule = |proto, first, last| PortRule { proto, first, last };
    let v = Config::parse(&minimal(), Path::new("/")).unwrap();
    assert_eq!(
        v.exit_ports,
        ExitPorts::Block(vec![rule(Some(Proto::Tcp), 25, 25)])
    );
    assert_eq!(v.advertised_blocked_ports(), vec![25]);
    let v = Config::parse(
        &(minimal() + "[egress]\nblock-ports = [\"tcp/25\", \"udp/6881-6883\", \"465\"]\n"),
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(
        v.exit_ports,
        ExitPorts::Block(vec![
            rule(Some(Proto::Tcp), 25, 25),
            rule(Some(Proto::Udp), 6881, 6883),
            rule(None, 465, 465),
        ])
    );
    assert_eq!(
        v.advertised_blocked_ports(),
        vec![25, 465, 6881, 6882, 6883]
    );
    // Everything open; a long range is advertised up to the descriptor's 32 ports.
    let v = Config::parse(
        &(minimal() + "[egress]\nblock-ports = []\n"),
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(v.exit_ports, ExitPorts::Block(Vec::new()));
    let v = Config::parse(
        &(minimal() + "[egress]\nblock-ports = [\"1000-2000\"]\n"),
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(v.advertised_blocked_ports().len(), 32);
    // A reduced exit policy: only these; nothing advertised as blocked.
    let v = Config::parse(
        &(minimal() + "[egress]\nallow-ports = [\"tcp/80\", \"tcp/443\", \"udp/53\"]\n"),
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(
        v.exit_ports,
        ExitPorts::AllowOnly(vec![
            rule(Some(Proto::Tcp), 80, 80),
            rule(Some(Proto::Tcp), 443, 443),
            rule(Some(Proto::Udp), 53, 53),
        ])
    );
    assert!(v.advertised_blocked_ports().is_empty());
    for (bad, says) in [
        ("block-ports = [\"sctp/25\"]", "unknown protocol"),
        ("block-ports = [\"tcp/0\"]", "not a port"),
        ("block-ports = [\"tcp/70000\"]", "not a port"),
        ("block-ports = [\"30-20\"]", "backwards"),
        ("block-ports = [\"tcp/\"]", "not a port"),
        (
            "block-ports = []\nallow-ports = [\"443\"]",
            "either block-ports or allow-ports",
        ),
    ] {
        let e = err(&(minimal() + "[egress]\n" + bad + "\n"));
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn sharing_limits_parse_into_bytes_a_schedule_and_a_zone_and_need_paid_sharing() {
    let paid = minimal()
        + "[identity]\nkey-file = \"id.key\"\n[network]\nid = \"00112233445566778899aabbccddeeff\"\n\
           ledger-key = \"0000000000000000000000000000000000000000000000000000000000000000\"\n\
           [paid]\nenabled = true\nprice-micros-per-gib = 1000\n";
    let v = Config::parse(&paid, Path::new("/")).unwrap();
    assert!(!v.share.limits_anything());
    assert_eq!(v.share_rate, (0, 0));
    let limits = "[limits]\nshare-up-mbit = 5\nshare-down-mbit = 20\ndaily-quota-gib = 0.5\n\
                  monthly-quota-gib = 100\nquota-reset-day = 15\n\
                  schedule = [\"mon-fri 18:00-23:30\", \"sat,sun 00:00-24:00\"]\n\
                  timezone = \"CET-1CEST,M3.5.0,M10.5.0/3\"\n";
    let v = Config::parse(&(paid.clone() + limits), Path::new("/")).unwrap();
    assert_eq!(v.share_rate, (625_000, 2_500_000));
    assert_eq!(v.share.daily, Some(1 << 29));
    assert_eq!(v.share.monthly, Some(100 << 30));
    assert_eq!(v.share.reset_day, 15);
    let s = v.share.schedule.as_ref().unwrap();
    assert!(s.shares_at(0, 19 * 60) && !s.shares_at(0, 12 * 60) && s.shares_at(6, 12 * 60));
    for (bad, says) in [
        ("daily-quota-gib = -1", "daily-quota-gib"),
        ("monthly-quota-gib = 1e9", "monthly-quota-gib"),
        ("quota-reset-day = 0", "1..=31"),
        ("quota-reset-day = 32", "1..=31"),
        ("share-down-mbit = 200000", "share-down-mbit"),
        ("schedule = [\"weekdays 18:00-23:00\"]", "unknown day"),
        ("timezone = \"Mars/Olympus_Mons\"", "limits.timezone"),
    ] {
        let e = err(&(paid.clone() + "[limits]\n" + bad + "\n"));
        assert!(e.contains(says), "{bad}: {e}");
    }
    // A quota or schedule without paid sharing would limit nothing: said, not ignored.
    let e = err(&(minimal() + "[limits]\ndaily-quota-gib = 1\n"));
    assert!(e.contains("[paid] enabled = true"), "{e}");
}
