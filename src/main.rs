//! The `sso-sidecar` command line: parse arguments, load the configuration, set up logging and
//! call [`sso_sidecar::run`]. No logic of its own. A bad configuration exits with 78
//! (`EX_CONFIG`) before any port is bound.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use sso_sidecar::config::{self, Config, Inputs};
use std::path::PathBuf;
use std::process::ExitCode;

use sso_sidecar::commands::EX_CONFIG;

#[derive(Parser)]
#[command(
    name = "sso-sidecar",
    version,
    about = "OpenID Connect authenticating reverse proxy",
    after_help = "Configuration: built-in defaults < the TOML file (--config or SSO_SIDECAR_CONFIG) \
< a .env file (SSO_SIDECAR_ENV_FILE, else ./.env) < the environment.\n\
OpenRag's own variables: AUTH_MODE, AUTH_TOKEN, OIDC_ENDPOINT, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, \
OIDC_REDIRECT_URI, OIDC_TOKEN_ENCRYPTION_KEY, OIDC_SCOPES, OIDC_CLAIM_SOURCE, OIDC_CLAIM_MAPPING, \
OIDC_AUTO_PROVISION_LOGIN, OIDC_POST_LOGOUT_REDIRECT_URI.\n\
The sidecar's own: SSO_SIDECAR_LISTEN, SSO_SIDECAR_UPSTREAM, SSO_SIDECAR_ADMIN_LISTEN, \
SSO_SIDECAR_REDIS_URL, SSO_SIDECAR_IDENTITY, SSO_SIDECAR_LOG_FORMAT and more (nested keys joined \
with __, e.g. SSO_SIDECAR_CONNECTIONS__MAX_PER_IP).\n\
Every setting, its default and its variable: README.md (\"Configuration\") and \
config/sso-sidecar.example.toml."
)]
struct Cli {
    /// TOML configuration file (also SSO_SIDECAR_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the configuration and exit: 0 when valid, else every problem is listed.
    Check,
    /// Print a fresh Fernet key for OIDC_TOKEN_ENCRYPTION_KEY.
    GenKey,
    /// Probe the admin listener's /healthz (for container exec probes); exit 0 when healthy.
    Healthcheck,
}

/// jemalloc rather than glibc's malloc: under a burst of connections both peak alike, but
/// glibc keeps the peak after the burst, where jemalloc's background thread returns it within
/// about a second (its settings: .cargo/config.toml). Measured in docs/benchmark.md.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::GenKey => {
            println!("{}", sso_sidecar::crypto::generate_key());
            ExitCode::SUCCESS
        }
        Command::Check => match load(cli.config) {
            Ok(c) => sso_sidecar::commands::check(&c),
            Err(code) => code,
        },
        Command::Healthcheck => {
            // Only where the admin listener is: the probe must not call a serving container
            // unhealthy for a configuration it cannot read whole (one `run` got with --config).
            let admin = config::load(Inputs::from_process(cli.config))
                .map(|c| c.admin_listen)
                .unwrap_or_else(|_| sso_sidecar::commands::admin_listen_from_env());
            sso_sidecar::commands::healthcheck(admin)
        }
        Command::Run => match load(cli.config) {
            Ok(c) => run(c),
            Err(code) => code,
        },
    }
}

fn load(config_file: Option<PathBuf>) -> Result<Config, ExitCode> {
    config::load(Inputs::from_process(config_file)).map_err(|e| {
        eprint!("sso-sidecar: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

fn run(config: Config) -> ExitCode {
    sso_sidecar::telemetry::init(config.log_format, &config.log_level);
    let problems = sso_sidecar::commands::preflight(&config);
    if !problems.is_empty() {
        for p in &problems {
            tracing::error!("{p}");
            eprintln!("sso-sidecar: {p}");
        }
        return ExitCode::from(EX_CONFIG);
    }
    let runtime = match sso_sidecar::commands::runtime(tokio::runtime::Builder::new_multi_thread())
    {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let listeners = match bind(&config) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("sso-sidecar: {e}");
                return ExitCode::FAILURE;
            }
        };
        match sso_sidecar::run(config, listeners, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("sso-sidecar: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn bind(config: &Config) -> Result<sso_sidecar::Listeners, String> {
    let public_error = |e: std::io::Error| {
        format!(
            "cannot listen on {} (SSO_SIDECAR_LISTEN): {e}{}",
            config.listen,
            in_use_hint(&e)
        )
    };
    // First bound alone (not listening: nothing is accepted on it), then dropped: the shared
    // socket below would join any other process of this user listening with SO_REUSEPORT
    // there (a second sidecar), and the kernel would split the connections between the two
    // without a word.
    drop(sso_sidecar::server::bind_alone(config.listen).map_err(public_error)?);
    // Shared (SO_REUSEPORT) so that each worker thread can listen on its own socket.
    let public = sso_sidecar::server::listen(config.listen, true).map_err(public_error)?;
    let admin = sso_sidecar::server::listen(config.admin_listen, false).map_err(|e| {
        format!(
            "cannot listen on {} (SSO_SIDECAR_ADMIN_LISTEN): {e}{}",
            config.admin_listen,
            in_use_hint(&e)
        )
    })?;
    Ok(sso_sidecar::Listeners { public, admin })
}

fn in_use_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        " (another process listens there: another sso-sidecar, or the backend itself?)"
    } else {
        ""
    }
}

/// Completes on SIGTERM (Kubernetes) or SIGINT (Ctrl-C). A second one ends the process at
/// once, exit 1, without waiting for the drain: someone at a terminal pressing Ctrl-C again
/// means it (Kubernetes sends SIGKILL at the end of the grace period instead).
async fn shutdown_signal() {
    termination().await;
    tokio::spawn(async {
        termination().await;
        eprintln!("sso-sidecar: a second signal: exiting without waiting for the drain");
        std::process::exit(1);
    });
}

/// The next SIGTERM or SIGINT.
async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
