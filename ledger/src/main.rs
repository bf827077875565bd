//! `ferry-ledger`: runs the rewards ledger HTTP API and its admin commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use ferry_ledger::config::{self, Config, Database};
use ferry_ledger::directory::{Directory, UdpProber};
use ferry_ledger::http::{AppState, JoinPolicy, ServeLimits, hash_token, router, system_clock};
use ferry_ledger::{Ledger, PgStore, Role, SqliteStore, Store};
use ferry_receipts::PublicKey;
use ring::rand::{SecureRandom as _, SystemRandom};

mod bench;
mod bench_directory;

#[derive(Parser)]
#[command(name = "ferry-ledger", version, about = "Ferry rewards ledger")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the HTTP API.
    Run {
        /// Ledger configuration file (TOML, see config/ledger.example.toml; `ferry-ledger init`
        /// writes one).
        #[arg(long, env = "FERRY_LEDGER_CONFIG")]
        config: PathBuf,
    },
    /// Create a config (if missing) with a random network id, plus the ledger key and an
    /// admin token (mode 0600) if missing.
    Init {
        /// Configuration file to create; an existing one is kept (missing key and token files
        /// next to it are still created).
        #[arg(long)]
        config: PathBuf,
        /// Price for a new config.
        #[arg(long, default_value_t = 500_000)]
        price_micros_per_gib: u64,
    },
    /// Print the ledger public key and network id as the `[network]` section a relay's
    /// ferry-agent config needs (and the client's ledger-url).
    Pubkey {
        /// Ledger configuration file (TOML, see config/ledger.example.toml; `ferry-ledger init`
        /// writes one).
        #[arg(long, env = "FERRY_LEDGER_CONFIG")]
        config: PathBuf,
    },
    /// Register a relay or client key directly in the database.
    Register {
        /// Ledger configuration file (TOML, see config/ledger.example.toml; `ferry-ledger init`
        /// writes one).
        #[arg(long, env = "FERRY_LEDGER_CONFIG")]
        config: PathBuf,
        /// Ed25519 public key, 64 hex characters.
        #[arg(long)]
        key: String,
        /// relay or client.
        #[arg(long)]
        role: String,
    },
    /// Credit a client's balance directly in the database.
    Credit {
        /// Ledger configuration file (TOML, see config/ledger.example.toml; `ferry-ledger init`
        /// writes one).
        #[arg(long, env = "FERRY_LEDGER_CONFIG")]
        config: PathBuf,
        /// Client public key, 64 hex characters.
        #[arg(long)]
        client: String,
        /// Micros to add.
        #[arg(long)]
        amount: u64,
    },
    /// Measure receipt ingestion throughput (receipts/s) against a store.
    Bench(bench::BenchArgs),
    /// Measure the relay directory: announce N relays, then time GET /v1/relays (p50/p99).
    BenchDirectory(bench_directory::DirectoryBenchArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: never escape codes in log files or journald.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Run { config } => run(&config).await,
        Cmd::Init {
            config,
            price_micros_per_gib,
        } => init(&config, price_micros_per_gib),
        Cmd::Pubkey { config } => {
            let cfg = load(&config)?;
            let key = cfg.signing_key().context("loading ledger key")?;
            say(&agent_snippet(&cfg, &key.public_key()));
            Ok(())
        }
        Cmd::Register { config, key, role } => {
            let cfg = load(&config)?;
            let key = parse_key(&key)?;
            let role = Role::parse(&role).context("--role must be relay or client")?;
            let now = unix_now();
            let created = with_store(&cfg, |s| async move {
                s.register_key(key, role, now).await.map_err(Into::into)
            })
            .await?;
            say(if created {
                "registered"
            } else {
                "already registered"
            });
            Ok(())
        }
        Cmd::Credit {
            config,
            client,
            amount,
        } => {
            let cfg = load(&config)?;
            let key = parse_key(&client)?;
            if amount == 0 {
                bail!("--amount must be positive");
            }
            let bal = with_store(&cfg, |s| async move {
                s.credit_client(key, amount).await.map_err(Into::into)
            })
            .await
            .with_context(|| format!("crediting client {key}"))?;
            say(&format!("balance-micros = {bal}"));
            Ok(())
        }
        Cmd::Bench(args) => bench::run(args).await,
        Cmd::BenchDirectory(args) => bench_directory::run(args).await,
    }
}

#[allow(clippy::print_stdout)]
fn say(s: &str) {
    println!("{s}");
}

fn load(path: &Path) -> Result<Config> {
    Config::load(path).with_context(|| format!("loading config {}", path.display()))
}

fn parse_key(s: &str) -> Result<PublicKey> {
    PublicKey::from_hex(s).context("key must be 64 hex characters (Ed25519 public key)")
}

fn unix_now() -> u64 {
    (system_clock())()
}

/// Opens the configured store and runs `f` on it (either backend).
async fn with_store<T, F, Fut>(cfg: &Config, f: F) -> Result<T>
where
    F: FnOnce(AnyStoreRef) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    f(open_store(cfg).await?).await
}

enum AnyStoreRef {
    Sqlite(SqliteStore),
    Pg(PgStore),
}

impl AnyStoreRef {
    async fn register_key(
        &self,
        k: PublicKey,
        r: Role,
        now: u64,
    ) -> Result<bool, ferry_ledger::StoreError> {
        match self {
            Self::Sqlite(s) => s.register_key(k, r, now).await,
            Self::Pg(s) => s.register_key(k, r, now).await,
        }
    }

    async fn credit_client(
        &self,
        k: PublicKey,
        amount: u64,
    ) -> Result<u64, ferry_ledger::StoreError> {
        match self {
            Self::Sqlite(s) => s.credit_client(k, amount).await,
            Self::Pg(s) => s.credit_client(k, amount).await,
        }
    }
}

async fn open_store(cfg: &Config) -> Result<AnyStoreRef> {
    Ok(match cfg.database()? {
        Database::Sqlite(p) => AnyStoreRef::Sqlite(
            SqliteStore::open(&p).with_context(|| format!("opening sqlite {}", p.display()))?,
        ),
        Database::Postgres(url) => AnyStoreRef::Pg(
            PgStore::connect(&url, cfg.postgres_pool_size, None)
                .await
                .context("connecting to postgres")?,
        ),
    })
}

async fn run(path: &Path) -> Result<()> {
    let cfg = load(path)?;
    let key = cfg.signing_key().context("loading ledger key")?;
    let token = cfg.admin_token().context("loading admin token")?;
    if token.is_none() {
        tracing::warn!("no admin token configured: admin endpoints are disabled");
    }
    let params = cfg.params()?;
    match open_store(&cfg).await? {
        AnyStoreRef::Sqlite(s) => serve(&cfg, Ledger::new(s, key, params), token).await,
        AnyStoreRef::Pg(s) => serve(&cfg, Ledger::new(s, key, params), token).await,
    }
}

async fn serve<S: Store>(cfg: &Config, ledger: Ledger<S>, token: Option<String>) -> Result<()> {
    let mut state = AppState {
        ledger: Arc::new(ledger),
        admin_token_hash: token.as_deref().map(hash_token),
        open_registration: cfg.open_registration,
        max_body_bytes: cfg.max_body_bytes,
        clock: system_clock(),
        join: JoinPolicy::new(cfg.self_registration, cfg.registrations_per_hour),
        directory: None,
    };
    if cfg.directory.enabled {
        let prober = UdpProber {
            attempts: cfg.directory.probe_attempts,
            wait: std::time::Duration::from_millis(cfg.directory.probe_wait_ms),
        };
        state.directory = Some(Arc::new(Directory::new(
            state.ledger.clone(),
            cfg.directory_params()?,
            Arc::new(prober),
        )));
    }
    let ledger_key = state.ledger.public_key();
    let mut app = router(state.clone());
    if cfg.metrics {
        app = app.merge(ferry_ledger::stats::metrics_router(state.ledger.stats()));
    }
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let max_connections = connections_within_fd_limit(cfg.max_connections, cfg.postgres_pool_size);
    let limits = ServeLimits::new(
        max_connections,
        cfg.header_timeout_seconds,
        cfg.request_timeout_seconds,
    );
    tracing::info!(listen = %cfg.listen, %ledger_key, max_connections, "ferry-ledger serving");
    ferry_ledger::http::serve(vec![listener], limits, app, shutdown())
        .await
        .context("http server")
}

/// File descriptors kept free for the database, logs and the listener.
const FD_RESERVE: u64 = 64;

/// Raises the open-file soft limit towards the hard limit so `wanted` connections fit, and
/// returns how many do (with a warning naming the fix when fewer than `wanted`).
fn connections_within_fd_limit(wanted: usize, pool: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted;
    };
    let reserve = FD_RESERVE + pool as u64;
    let need = wanted as u64 + reserve;
    let mut soft_now = soft;
    if soft < need {
        let target = need.min(hard);
        if setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
            soft_now = target;
        }
    }
    let fit = usize::try_from(soft_now.saturating_sub(reserve)).unwrap_or(usize::MAX);
    if fit >= wanted {
        return wanted;
    }
    let cap = fit.max(16);
    tracing::warn!(
        open_files = soft_now,
        max_connections = wanted,
        serving = cap,
        "the open-file limit holds only {cap} connections, not max-connections = {wanted}; \
         raise it (ulimit -n {need}, or LimitNOFILE={need} in the systemd unit)"
    );
    cap
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

fn init(path: &Path, price: u64) -> Result<()> {
    let rng = SystemRandom::new();
    let rand = |n: usize| -> Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        rng.fill(&mut b)
            .map_err(|_| anyhow::anyhow!("no OS randomness"))?;
        Ok(b)
    };
    if !path.exists() {
        let text = format!(
            "network-id = \"{}\"\nlisten = \"127.0.0.1:7878\"\nkey-file = \"ledger.key\"\n\
             admin-token-file = \"ledger-admin.token\"\ndatabase-url = \"sqlite:ledger.db\"\n\
             epoch-seconds = 3600\nprice-micros-per-gib = {price}\n",
            hex::encode(rand(16)?)
        );
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        say(&format!("wrote {}", path.display()));
    }
    let cfg = load(path)?;
    let key_path = cfg.resolve(&cfg.key_file);
    if !key_path.exists() {
        let seed: [u8; 32] = rand(32)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("seed length"))?;
        config::write_secret(&key_path, &config::encode_seed(&seed))?;
        say(&format!("wrote {} (mode 0600)", key_path.display()));
    }
    if let Some(t) = &cfg.admin_token_file {
        let t = cfg.resolve(t);
        if !t.exists() {
            config::write_secret(&t, &hex::encode(rand(32)?))?;
            say(&format!("wrote {} (mode 0600)", t.display()));
        }
    }
    let key = cfg.signing_key().context("loading ledger key")?;
    say(&agent_snippet(&cfg, &key.public_key()));
    Ok(())
}

/// What relays and clients paste: the agent's `[network]` section (its key names) and the
/// client's `ledger-url`. An unspecified listen address becomes a placeholder to fill in.
fn agent_snippet(cfg: &Config, ledger_key: &PublicKey) -> String {
    let url = match cfg.listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => format!("http://<this-host>:{}", a.port()),
        Ok(a) => format!("http://{a}"),
        Err(_) => format!("http://{}", cfg.listen),
    };
    format!(
        "# ferry-agent config (paid relays):\n[network]\nid = \"{}\"\nledger-key = \"{ledger_key}\"\n\
         ledger-url = \"{url}\"\n# ferry client.toml:\n# [client]\n# ledger-url = \"{url}\"",
        cfg.network_id
    )
}
