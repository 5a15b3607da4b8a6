//! Configuration: read the files, check them, compile them into a [`Snapshot`].
//!
//! The flow is parse → check → build: `file.rs` holds the serde structs, `compile.rs` checks
//! meaning while it builds the runtime objects, and `snapshot.rs` holds the immutable result
//! that requests read through an `ArcSwap`. Every problem found is reported as a
//! [`ConfigError`] naming the file, the key and the reason, and all of them are reported at
//! once.

pub mod carry;
pub mod compile;
pub mod file;
pub mod restart;
pub mod snapshot;
pub mod units;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use snapshot::Snapshot;

use crate::metrics::Metrics;
use file::{DynamicFile, Log, MainFile, UpstreamDefaults};
use restart::StaticSections;

/// One problem in the config: `file:key: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// A dotted key path such as `routes[2].match.path_prefix`; empty for whole-file problems.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.key, self.reason)
        }
    }
}

/// The settings that need a restart to change, checked and converted.
#[derive(Debug, Clone)]
pub struct StaticConfig {
    pub http_addr: SocketAddr,
    /// Bound only when the config has a certificate. A clash with another listener is
    /// reported when binding, since only then is it known whether it is bound.
    pub https_addr: SocketAddr,
    pub monitor_addr: SocketAddr,
    pub server: ServerSettings,
    /// The `[upstream]` defaults. Not static in fact: a reload compiles the clusters with the
    /// new file's defaults.
    pub upstream: UpstreamDefaults,
    pub log: Log,
    /// `[redis]`, when set.
    pub redis: Option<crate::ratelimit::redis::RedisSettings>,
    /// `[ratelimit]`.
    pub ratelimit: crate::ratelimit::StoreSettings,
    pub reload: ReloadSettings,
}

/// `[reload]` in runtime form.
#[derive(Debug, Clone)]
pub struct ReloadSettings {
    /// The bearer token `/reload/...` callers must send; `None` asks for none.
    pub token: Option<String>,
    pub watch: bool,
    pub watch_debounce: Duration,
}

/// `[server]` in runtime form.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub workers: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// `None` when off.
    pub send_timeout: Option<Duration>,
    /// The longest wait for more of a body being held; `None` when off.
    pub body_read_timeout: Option<Duration>,
    pub max_header_size: usize,
    pub max_headers: usize,
    pub max_request_body: u64,
    /// The largest body held in memory (model routing, LLM reading, retries); at most
    /// `max_request_body`.
    pub max_buffered_body: u64,
    pub http2: bool,
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
    pub trusted_proxies: Vec<IpNet>,
}

impl ServerSettings {
    /// Whether `X-Forwarded-*` from this peer is believed.
    pub fn is_trusted(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

/// The dynamic sections of every file, in the order they were read.
#[derive(Debug, Default)]
pub struct DynamicSources {
    pub files: Vec<(PathBuf, DynamicFile)>,
    /// A digest of every file's bytes: the config version.
    pub version: String,
    /// Whether the main file has a `[redis]` section, which `backend = "redis"` limits need.
    pub redis: bool,
}

/// A config read from disk: the static part and the dynamic sources, not yet compiled.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub static_config: StaticConfig,
    pub dynamic: DynamicSources,
    /// The directory the dynamic files were read from (`dynamic_dir` resolved against the
    /// main file's directory, or the one a reload was pointed at); `None` without one.
    pub dynamic_dir: Option<PathBuf>,
    /// The static sections as written, to tell which keys a reload cannot apply.
    pub statics: StaticSections,
}

/// Where [`load_with`] reads the dynamic files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DynamicDir {
    /// The main file's `dynamic_dir`, relative to the main file's directory: at start and
    /// for `sluice check`.
    FromMainFile,
    /// This directory, or none, whatever the main file says. A reload reads the directory
    /// the process started with (a new `dynamic_dir` needs a restart), or the one a
    /// conf-agent names with `path=`.
    Fixed(Option<PathBuf>),
}

/// Reads the main file and its dynamic directory and checks the static part. When only the
/// static part is wrong, the dynamic part is checked too, so the errors list every problem.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    load_with(path, &DynamicDir::FromMainFile)
}

/// [`load`], with the dynamic files read from `dir`.
pub fn load_with(path: &Path, dir: &DynamicDir) -> Result<Config, Vec<ConfigError>> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let main: MainFile = parse_file(path, &mut hasher).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let static_config = compile::static_config(path, &main, &mut errors);
    let static_errors = errors.len();
    let statics = StaticSections::of(&main);
    let dynamic_dir = match dir {
        DynamicDir::FromMainFile => main
            .dynamic_dir
            .as_ref()
            .map(|dir| path.parent().unwrap_or(Path::new(".")).join(dir)),
        DynamicDir::Fixed(dir) => dir.clone(),
    };

    let mut files = vec![(
        path.to_owned(),
        DynamicFile {
            clusters: main.clusters,
            routes: main.routes,
            certificates: main.certificates,
            tls: main.tls,
            consumers: main.consumers,
            limits: main.limits,
        },
    )];
    if let Some(dir) = &dynamic_dir {
        match dynamic_files(dir) {
            Ok(paths) => {
                for file in paths {
                    match parse_file::<DynamicFile>(&file, &mut hasher) {
                        Ok(parsed) => files.push((file, parsed)),
                        Err(e) => errors.push(e),
                    }
                }
            }
            Err(reason) => errors.push(ConfigError {
                file: path.to_owned(),
                key: "dynamic_dir".to_owned(),
                reason,
            }),
        }
    }
    let dynamic = DynamicSources {
        files,
        version: format!("{:016x}", hasher.finish()),
        redis: main.redis.is_some(),
    };
    match (static_config, errors.is_empty()) {
        (Some(static_config), true) => Ok(Config {
            path: path.to_owned(),
            static_config,
            dynamic,
            dynamic_dir,
            statics,
        }),
        (None, _) if errors.len() == static_errors => {
            // Every file parsed and only the static part is wrong: check the dynamic part too,
            // so that one run reports every problem. (After a parse error it would report
            // clusters of the unparsed file as missing.)
            let checked = compile::snapshot(&dynamic, &main.upstream, &Metrics::new());
            errors.extend(checked.err().unwrap_or_default());
            Err(errors)
        }
        _ => Err(errors),
    }
}

/// The `*.toml` files of a directory, in name order; hidden entries (kubelet's `..data`) are
/// skipped, symlinks are followed.
fn dynamic_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read directory {}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read directory {}: {e}", dir.display()))?;
        paths.push(entry.path());
    }
    let mut paths: Vec<PathBuf> = paths
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            !name.starts_with('.') && p.extension().is_some_and(|e| e == "toml") && p.is_file()
        })
        .collect();
    paths.sort();
    Ok(paths)
}

/// Reads and parses one TOML file, naming the key that failed.
fn parse_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    hasher: &mut impl Hasher,
) -> Result<T, ConfigError> {
    let error = |key: String, reason: String| ConfigError {
        file: path.to_owned(),
        key,
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(String::new(), e.to_string()))?;
    text.hash(hasher);
    let deserializer = toml::Deserializer::parse(&text)
        .map_err(|e| error(String::new(), describe_toml_error(&text, &e)))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        error(key, describe_toml_error(&text, e.inner()))
    })
}

/// A TOML error as one line: its message and, when known, where it is.
fn describe_toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{message} (line {line}, column {column})")
        }
        None => message,
    }
}
