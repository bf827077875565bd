//! `ferry-demo`: the Ferry demo (scripts/demo.sh). Client, home router and internet host in
//! network namespaces; a paid session through the real `ferry-agent`, receipts co-signed by
//! `ferry connect` and credited by `ferry-ledger`. Needs root. The flow is
//! [`ferry_e2e::demo::run`]; this binary adds Ctrl-C handling: SIGINT/SIGTERM/SIGHUP stop the
//! demo at its next step and everything is cleaned up (a second signal exits at once; the
//! next run reaps what is left). Signals are caught with handlers, never blocked: a blocked
//! mask would be inherited by the programs the demo starts (they stop on SIGTERM).

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

/// Catches SIGINT/SIGTERM/SIGHUP on a background thread; the first sets `cancel`.
fn catch_signals(cancel: Arc<AtomicBool>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("signal runtime")?;
    // Register the handlers before the demo starts anything.
    let (mut int, mut term, mut hup) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            loop {
                let name = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                    _ = hup.recv() => "SIGHUP",
                };
                if cancel.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "ferry-demo: {name} again, exiting now (the next run reaps leftovers)"
                    );
                    std::process::exit(130);
                }
                eprintln!("ferry-demo: {name}: stopping and cleaning up (again to force)");
            }
        });
    });
    Ok(())
}

fn main() -> ExitCode {
    let cancel = Arc::new(AtomicBool::new(false));
    if let Err(e) = catch_signals(cancel.clone()) {
        eprintln!("ferry-demo: {e:#}");
        return ExitCode::FAILURE;
    }
    let mut opts = ferry_e2e::demo::DemoOptions::default();
    if let Some(mib) = std::env::var("FERRY_DEMO_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        opts.download_bytes = mib << 20;
    }
    let _ = writeln!(
        std::io::stdout().lock(),
        "Ferry demo: a client pays a home router to relay its traffic; receipts are co-signed and credited by the ledger."
    );
    match ferry_e2e::demo::run(&opts, &cancel) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nferry-demo FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
