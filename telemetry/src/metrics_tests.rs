#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]
use super::*;

/// Value of the sample whose series (name plus optional `{labels}`) is exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.split_whitespace().next().unwrap().parse().unwrap())
}

fn snapshot() -> Snapshot {
    let mut s = Snapshot::default();
    s.sent_bytes = 1_000_001;
    s.received_bytes = 2_000_002;
    s.latest_handshake_unix = 1_764_000_000;
    s.peers = vec![
        PeerTraffic {
            public_key: "peerA+/=".into(),
            sent_bytes: 600_000,
            received_bytes: 1_500_000,
            latest_handshake_unix: 1_764_000_000,
        },
        PeerTraffic {
            public_key: "peerB".into(),
            sent_bytes: 400_001,
            received_bytes: 500_002,
            latest_handshake_unix: 0,
        },
    ];
    s.peers_configured = 3;
    s.sessions_active = 2;
    s.handshakes = 7;
    s.drops.add(DropReason::Policy, 5);
    s.drops.add(DropReason::CreditWindow, 11);
    s.drops.add(DropReason::Policy, 1);
    s.receipts = ReceiptStats {
        issued: 40,
        cosigned: 38,
        rejected: 1,
        submitted: 30,
        pending: 8,
    };
    s.unacknowledged_bytes = 65_536;
    s.earned_bytes = 123_456_789;
    s.dns = Some(DnsStats {
        queries: 9,
        upstream_failures: 2,
    });
    s
}

fn encoded(per_peer_labels: bool) -> String {
    let mut m = Metrics::new(&MetricsConfig {
        per_peer_labels,
        ..MetricsConfig::default()
    });
    m.register_agent(snapshot);
    m.encode().unwrap()
}

#[test]
fn aggregate_mode_exports_wireguard_exporter_names_without_peer_labels() {
    let text = encoded(false);
    assert_eq!(
        sample(&text, "wireguard_sent_bytes_total"),
        Some(1_000_001.0)
    );
    assert_eq!(
        sample(&text, "wireguard_received_bytes_total"),
        Some(2_000_002.0)
    );
    assert_eq!(
        sample(&text, "wireguard_latest_handshake_seconds"),
        Some(1_764_000_000.0)
    );
    assert!(!text.contains("public_key"), "{text}");
    assert!(
        text.contains("# TYPE wireguard_sent_bytes counter"),
        "{text}"
    );
}

#[test]
fn per_peer_mode_labels_each_peer_by_public_key() {
    let text = encoded(true);
    assert_eq!(
        sample(
            &text,
            r#"wireguard_sent_bytes_total{public_key="peerA+/="}"#
        ),
        Some(600_000.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"wireguard_received_bytes_total{public_key="peerB"}"#
        ),
        Some(500_002.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"wireguard_latest_handshake_seconds{public_key="peerB"}"#
        ),
        Some(0.0)
    );
    assert_eq!(sample(&text, "wireguard_sent_bytes_total"), None);
}

#[test]
fn ferry_metrics_carry_snapshot_values() {
    let text = encoded(false);
    let expect = [
        ("ferry_peers", 3.0),
        ("ferry_sessions_active", 2.0),
        ("ferry_handshakes_total", 7.0),
        (r#"ferry_packets_dropped_total{reason="policy"}"#, 6.0),
        (
            r#"ferry_packets_dropped_total{reason="credit_window"}"#,
            11.0,
        ),
        (r#"ferry_packets_dropped_total{reason="allowed_ips"}"#, 0.0),
        (
            r#"ferry_packets_dropped_total{reason="paid_no_session"}"#,
            0.0,
        ),
        ("ferry_receipts_issued_total", 40.0),
        ("ferry_receipts_cosigned_total", 38.0),
        ("ferry_receipts_rejected_total", 1.0),
        ("ferry_receipts_submitted_total", 30.0),
        ("ferry_receipts_pending", 8.0),
        ("ferry_unacknowledged_bytes", 65_536.0),
        ("ferry_earned_bytes_total", 123_456_789.0),
        ("ferry_dns_queries_total", 9.0),
        ("ferry_dns_upstream_failures_total", 2.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    for reason in DropReason::ALL {
        let series = format!(
            r#"ferry_packets_dropped_total{{reason="{}"}}"#,
            reason.as_label()
        );
        assert!(sample(&text, &series).is_some(), "{series}");
    }
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics must end with # EOF"
    );
}

#[test]
fn dns_metrics_are_absent_when_the_forwarder_is_off() {
    let mut m = Metrics::new(&MetricsConfig::default());
    m.register_agent(Snapshot::default);
    let text = m.encode().unwrap();
    assert!(!text.contains("ferry_dns_"), "{text}");
    assert_eq!(sample(&text, "ferry_earned_bytes_total"), Some(0.0));
}

#[test]
fn snapshot_source_is_called_on_every_scrape() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let sent = Arc::new(AtomicU64::new(0));
    let mut m = Metrics::new(&MetricsConfig::default());
    let source = sent.clone();
    m.register_agent(move || {
        let mut s = Snapshot::default();
        s.sent_bytes = source.load(Ordering::Relaxed);
        s
    });
    assert_eq!(
        sample(&m.encode().unwrap(), "wireguard_sent_bytes_total"),
        Some(0.0)
    );
    sent.fetch_add(1500, Ordering::Relaxed);
    assert_eq!(
        sample(&m.encode().unwrap(), "wireguard_sent_bytes_total"),
        Some(1500.0)
    );
}

#[test]
fn fsync_histogram_and_process_metrics_are_exported() {
    let m = Metrics::new(&MetricsConfig::default());
    let rec = m.fsync_recorder();
    rec.record(Duration::from_micros(300));
    rec.record(Duration::from_millis(3));
    rec.record(Duration::from_millis(3));
    let text = m.encode().unwrap();
    assert_eq!(sample(&text, "ferry_store_fsync_seconds_count"), Some(3.0));
    assert_eq!(
        sample(&text, r#"ferry_store_fsync_seconds_bucket{le="0.0005"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"ferry_store_fsync_seconds_bucket{le="0.004"}"#),
        Some(3.0)
    );
    let rss = sample(&text, "process_resident_memory_bytes").unwrap();
    assert!(rss > 1_000_000.0, "rss {rss}");
    assert!(text.contains(r#"ferry_build_info{version=""#), "{text}");
}

#[test]
fn drop_counts_saturate_instead_of_wrapping() {
    let mut d = DropCounts::default();
    d.add(DropReason::Other, u64::MAX);
    d.add(DropReason::Other, 5);
    assert_eq!(d.get(DropReason::Other), u64::MAX);
    assert_eq!(d.get(DropReason::Policy), 0);
}

#[test]
fn metrics_config_parses_kebab_case_and_rejects_unknown_keys() {
    let cfg: MetricsConfig =
        toml_like(r#"{"listen":["192.168.1.1:9586","127.0.0.1:9586"],"per-peer-labels":true}"#);
    assert!(cfg.per_peer_labels);
    assert!(cfg.enabled);
    assert_eq!(cfg.listen[0], "192.168.1.1:9586".parse().unwrap());
    assert_eq!(cfg.listen.len(), 2);
    assert!(serde_json::from_str::<MetricsConfig>(r#"{"per_peer_labels":true}"#).is_err());
}

fn toml_like<T: serde::de::DeserializeOwned>(json: &str) -> T {
    serde_json::from_str(json).unwrap()
}

#[test]
fn drop_reason_slots_and_labels_are_distinct() {
    let mut counts = DropCounts::default();
    for (i, reason) in DropReason::ALL.into_iter().enumerate() {
        assert_eq!(reason.index(), i, "{reason:?}");
        counts.add(reason, i as u64 + 1);
    }
    for (i, reason) in DropReason::ALL.into_iter().enumerate() {
        assert_eq!(counts.get(reason), i as u64 + 1);
    }
    let labels: std::collections::BTreeSet<_> =
        DropReason::ALL.iter().map(|r| r.as_label()).collect();
    assert_eq!(labels.len(), DropReason::ALL.len());
}

#[test]
fn directory_metrics_name_each_problem_and_are_absent_without_announces() {
    let mut m = Metrics::new(&MetricsConfig::default());
    m.register_agent(Snapshot::default);
    assert!(!m.encode().unwrap().contains("ferry_directory_"));
    let mut m = Metrics::new(&MetricsConfig::default());
    m.register_agent(|| Snapshot {
        directory: Some(DirectoryStats {
            listed: false,
            findings: vec!["hello_port_closed".into()],
            announces_ok: 2,
            announces_failed: 1,
            probes_answered: 0,
            probes_refused: 4,
        }),
        ..Snapshot::default()
    });
    let text = m.encode().unwrap();
    assert_eq!(sample(&text, "ferry_directory_listed"), Some(0.0));
    assert_eq!(
        sample(&text, "ferry_directory_problem{code=\"hello_port_closed\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "ferry_directory_problem{code=\"address_mismatch\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "ferry_directory_announces_total{result=\"failed\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "ferry_directory_probes_total{result=\"refused\"}"),
        Some(4.0)
    );
}

#[test]
fn sharing_metrics_show_the_state_the_use_and_only_the_quotas_that_are_set() {
    let mut m = Metrics::new(&MetricsConfig::default());
    m.register_agent(Snapshot::default);
    assert!(!m.encode().unwrap().contains("ferry_shar"));
    let mut m = Metrics::new(&MetricsConfig::default());
    m.register_agent(|| Snapshot {
        sharing: Some(SharingStats {
            state: "daily_quota".into(),
            used_today_bytes: 1 << 30,
            used_period_bytes: 3 << 30,
            daily_quota_bytes: Some(1 << 30),
            monthly_quota_bytes: None,
            daily_reset_secs: Some(3600),
            monthly_reset_secs: Some(86_400),
        }),
        ..Snapshot::default()
    });
    let text = m.encode().unwrap();
    assert_eq!(
        sample(&text, "ferry_sharing{state=\"daily_quota\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "ferry_sharing{state=\"sharing\"}"), Some(0.0));
    assert_eq!(
        sample(&text, "ferry_share_used_bytes{period=\"month\"}"),
        Some(3.0 * 1_073_741_824.0)
    );
    assert_eq!(
        sample(&text, "ferry_share_quota_bytes{period=\"day\"}"),
        Some(1_073_741_824.0)
    );
    assert_eq!(
        sample(&text, "ferry_share_quota_bytes{period=\"month\"}"),
        None
    );
    assert_eq!(
        sample(&text, "ferry_share_reset_seconds{period=\"day\"}"),
        Some(3600.0)
    );
}
