//! The `sluice` command: parse arguments, set up logging, call into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use sluice::config::{self, compile, file::LogFormat, DynamicDir};
use sluice::metrics::Metrics;
use sluice::reload::{Reloader, Trigger};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// A data plane for LLM traffic: a reverse proxy for OpenAI-compatible model backends.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve traffic with a config file.
    Run(RunArgs),
    /// Check a config file as `run` would, print every problem, exit non-zero if any.
    /// Warnings (`warning: file:key: reason` on stderr) do not change the exit status.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Reads the dynamic files from DIR instead of the main file's `dynamic_dir`, exactly
    /// as `GET /reload/sluice?path=DIR` would: checks a conf-agent's new directory before
    /// it goes live.
    #[arg(long, value_name = "DIR")]
    dynamic_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// The main config file.
    #[arg(short = 'c', long = "config", default_value = "conf/sluice.toml")]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Overrides `listen.http` (for example `127.0.0.1:0`).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Overrides `listen.https` (bound only when the config has a certificate).
    #[arg(long, value_name = "ADDR")]
    https: Option<SocketAddr>,
    /// Overrides `listen.monitor`.
    #[arg(long, value_name = "ADDR")]
    monitor: Option<SocketAddr>,
    /// Overrides `server.workers` (0: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Overrides `log.level`; `RUST_LOG` overrides both.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Overrides `log.format`.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check(&args.config.config, args.dynamic_dir),
        Command::Run(args) => run(args),
    }
}

fn check(path: &std::path::Path, dynamic_dir: Option<PathBuf>) -> ExitCode {
    let dir = match dynamic_dir {
        Some(dir) => match config::load(path) {
            // As a reload: `path=` needs a `dynamic_dir`, since that is what the conf-agent
            // repoints.
            Ok(config) if config.dynamic_dir.is_none() => {
                eprintln!(
                    "{}:dynamic_dir: is not set, so a reload cannot read a directory given \
                     with path=: set dynamic_dir to the directory the conf-agent manages",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
            _ => DynamicDir::Fixed(Some(dir)),
        },
        None => DynamicDir::FromMainFile,
    };
    let loaded = config::load_with(path, &dir).and_then(|config| {
        compile::snapshot(
            &config.dynamic,
            &config.static_config.upstream,
            &Metrics::new(),
        )
    });
    match loaded {
        Ok(snapshot) => {
            // Warnings (an expired certificate, verification turned off) do not fail the check.
            for warning in &snapshot.warnings {
                eprintln!("warning: {warning}");
            }
            println!(
                "{}: ok ({} routes, {} clusters, version {})",
                path.display(),
                snapshot.routes.len(),
                snapshot.clusters.len(),
                snapshot.version
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let mut config = match config::load(&args.config.config) {
        Ok(config) => config,
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            return ExitCode::FAILURE;
        }
    };
    let settings = &mut config.static_config;
    if let Some(addr) = args.http {
        settings.http_addr = addr;
    }
    if let Some(addr) = args.https {
        settings.https_addr = addr;
    }
    if let Some(addr) = args.monitor {
        settings.monitor_addr = addr;
    }
    if let Some(workers) = args.workers {
        settings.server.workers = workers;
    }
    let level = args.log_level.unwrap_or_else(|| settings.log.level.clone());
    init_logging(&level, args.log_format.unwrap_or(settings.log.format));

    // One worker runs on the current thread: no work-stealing bookkeeping at all.
    let mut runtime = if settings.server.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if settings.server.workers > 1 {
        runtime.worker_threads(settings.server.workers);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // The handlers go in before the listeners are bound: a signal sent as soon as the
        // `listening` line is out must drain, not kill the process.
        let stop = shutdown_signal();
        // SIGHUP's default action ends the process: the handler goes in first too.
        let hangup = signal(SignalKind::hangup()).expect("SIGHUP handler installs");
        let running = match sluice::app::start(config).await {
            Ok(running) => running,
            Err(err) => {
                eprintln!("{err}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(reload_on_hangup(hangup, Arc::clone(&running.reloader)));
        stop.await;
        tracing::info!("shutting down");
        running.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Reloads the dynamic config from the live files on each SIGHUP; the outcome is logged,
/// counted and shown in `/status`.
async fn reload_on_hangup(mut hangup: Signal, reloader: Arc<Reloader>) {
    while hangup.recv().await.is_some() {
        reloader.reload(Trigger::Signal, None).await;
    }
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    }
}

fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
