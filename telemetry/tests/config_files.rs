//! config/grafana/ferry-dashboard.json and config/prometheus.yml: valid, importable, and only
//! referring to metrics this crate actually exports.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use ferry_telemetry::{DnsStats, Metrics, MetricsConfig, Snapshot};

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

fn jq(filter: &str, file: &str) -> String {
    let out = Command::new("jq")
        .args(["-e", "-r", filter])
        .arg(repo_file(file))
        .output()
        .expect("jq not installed (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "jq {filter:?} failed on {file}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const DASHBOARD: &str = "config/grafana/ferry-dashboard.json";

#[test]
fn dashboard_is_importable_json_with_a_datasource_input() {
    let checks = [
        r#".uid == "ferry-relay" and (.title | length > 0)"#,
        r#".__inputs | any(.name == "DS_PROMETHEUS" and .type == "datasource" and .pluginId == "prometheus")"#,
        r#"[.panels[] | select(.type != "row") | .datasource.uid == "${DS_PROMETHEUS}"] | all"#,
        r#"[.panels[] | .targets[]? | .datasource.uid == "${DS_PROMETHEUS}"] | all"#,
        r#"[.panels[].id] | length == (unique | length)"#,
        r#"[.panels[] | .gridPos | .w > 0 and .h > 0 and .x + .w <= 24] | all"#,
        r#"[.panels[] | select(.type != "row") | (.targets | length) > 0] | all"#,
        r#".templating.list | map(.name) | contains(["job", "instance"])"#,
    ];
    for check in checks {
        assert_eq!(jq(check, DASHBOARD).trim(), "true", "{check}");
    }
}

#[test]
fn dashboard_covers_the_required_panels() {
    let exprs = jq(
        "[.panels[] | .targets[]? | .expr] | join(\"\\n\")",
        DASHBOARD,
    );
    for needed in [
        "wireguard_sent_bytes_total",
        "wireguard_received_bytes_total",
        "ferry_sessions_active",
        "ferry_packets_dropped_total",
        "ferry_receipts_issued_total",
        "ferry_receipts_cosigned_total",
        "ferry_receipts_rejected_total",
        "ferry_receipts_submitted_total",
        "ferry_receipts_pending",
        "ferry_unacknowledged_bytes",
        "process_resident_memory_bytes",
        "ferry_store_fsync_seconds_bucket",
    ] {
        assert!(exprs.contains(needed), "no panel queries {needed}");
    }
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let mut metrics = Metrics::new(&MetricsConfig::default());
    metrics.register_agent(|| {
        let mut s = Snapshot::default();
        s.dns = Some(DnsStats::default());
        s
    });
    let exported: BTreeSet<String> = metrics
        .encode()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let exprs = jq(
        "[.panels[] | .targets[]? | .expr] | join(\"\\n\")",
        DASHBOARD,
    ) + &jq("[.templating.list[].definition] | join(\"\\n\")", DASHBOARD);
    let referenced = metric_names(&exprs);
    assert!(referenced.len() >= 15, "{referenced:?}");
    let missing: Vec<_> = referenced.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "dashboard queries unknown metrics {missing:?}; exported: {exported:?}"
    );
}

/// Identifiers in PromQL that look like our metric names.
fn metric_names(promql: &str) -> BTreeSet<String> {
    promql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            ["wireguard_", "ferry_", "process_"]
                .iter()
                .any(|p| w.starts_with(p))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "needs prometheus"]
fn prometheus_example_config_passes_promtool() {
    let out = Command::new("promtool")
        .args(["check", "config", "--syntax-only"])
        .arg(repo_file("config/prometheus.yml"))
        .output()
        .expect("promtool not installed (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
