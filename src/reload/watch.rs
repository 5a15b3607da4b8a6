//! The watch on the conf directory: reload when the files change.
//!
//! It watches directories, never single files: editors, conf-agents and kubelet replace
//! files (a rename, a symlink swap), and a watch on the old file would see nothing after the
//! first change. Three directories are watched, each non-recursively:
//!
//! - the main file's directory, for the main file and a ConfigMap's `..data` swap there;
//! - the dynamic directory's parent, for the dynamic directory's own entry, which a
//!   conf-agent repoints (a symlink) after a `path=` reload;
//! - the dynamic directory, for its files and a ConfigMap's `..data` swap there.
//!
//! Only events on those entries count: not a conf-agent's new `conf.d_<version>` beside the
//! live one (the agent reloads it with `path=` itself), not sluice's own reads of the files.
//! A burst of events is debounced: the reload starts once `watch_debounce` has passed
//! without another, and it re-reads everything. Then the dynamic directory's watch is
//! renewed, since the path may now lead to another directory.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Reloader, Trigger};
use crate::listener::stopped;

/// kubelet's link to the current version of a ConfigMap volume, swapped by a rename.
const KUBELET_DATA: &str = "..data";

/// Which entries of a watched directory count.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Names {
    /// These names.
    These(Vec<OsString>),
    /// Every entry whose name does not start with `.`, and `..data`.
    Visible,
}

impl Names {
    fn matches(&self, name: &std::ffi::OsStr) -> bool {
        match self {
            Names::These(names) => names.iter().any(|n| n == name),
            Names::Visible => name == KUBELET_DATA || !name.to_string_lossy().starts_with('.'),
        }
    }

    fn add(&mut self, name: OsString) {
        if let Names::These(names) = self {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
}

/// The directories to watch and the entries that count in each.
#[derive(Debug, Clone)]
pub struct Targets {
    dirs: BTreeMap<PathBuf, Names>,
    /// The dynamic directory, whose watch is renewed after each batch of events.
    dynamic: Option<PathBuf>,
}

impl Targets {
    /// The targets for main file `config` and dynamic directory `dynamic`.
    pub fn new(config: &Path, dynamic: Option<&Path>) -> Targets {
        let mut dirs: BTreeMap<PathBuf, Names> = BTreeMap::new();
        let mut entry = |path: &Path| {
            let path = absolute(path);
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                return;
            };
            let names = dirs
                .entry(parent.to_owned())
                .or_insert_with(|| Names::These(vec![OsString::from(KUBELET_DATA)]));
            names.add(name.to_owned());
        };
        entry(config);
        let dynamic = dynamic.map(absolute);
        if let Some(dir) = &dynamic {
            entry(dir);
            dirs.insert(dir.clone(), Names::Visible);
        }
        Targets { dirs, dynamic }
    }

    /// The directories watched.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.keys().map(PathBuf::as_path)
    }

    /// Whether `event` may change the config.
    pub fn relevant(&self, event: &Event) -> bool {
        if event.need_rescan() {
            return true;
        }
        let kind = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            // sluice's own reads of the files.
            EventKind::Access(_) => false,
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
            _ => true,
        };
        kind && event.paths.iter().any(|path| self.concerns(path))
    }

    fn concerns(&self, path: &Path) -> bool {
        if self.dirs.contains_key(path) {
            // A watched directory itself was removed or moved.
            return true;
        }
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => self
                .dirs
                .get(parent)
                .is_some_and(|names| names.matches(name)),
            _ => false,
        }
    }
}

/// `path` made absolute without resolving symlinks (the watch must follow the link's name,
/// not its current target).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Starts watching for `reloader`'s files; reloads after each debounced batch of changes,
/// until `stop` turns true. Fails when the watch cannot be set up (out of inotify
/// instances, say); the other triggers work without it.
pub fn spawn(
    reloader: Arc<Reloader>,
    debounce: Duration,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, String> {
    let targets = Targets::new(reloader.config_path(), reloader.live_dir());
    let (tx, events) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        // The receiver is gone only when the watch stops.
        let _ = tx.send(event);
    })
    .map_err(|e| e.to_string())?;
    for dir in targets.dirs() {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    }
    let dirs: Vec<String> = targets.dirs().map(|d| d.display().to_string()).collect();
    tracing::info!(dirs = %dirs.join(", "), ?debounce, "watching the config files");
    Ok(tokio::spawn(run(
        watcher, targets, events, reloader, debounce, stop,
    )))
}

async fn run(
    mut watcher: RecommendedWatcher,
    targets: Targets,
    mut events: mpsc::UnboundedReceiver<notify::Result<Event>>,
    reloader: Arc<Reloader>,
    debounce: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // Wait for a change that counts.
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) if counts(&targets, &event) => break,
                    Some(_) => {}
                    None => return,
                },
                () = stopped(&mut stop) => return,
            }
        }
        // Then for the files to settle.
        let quiet = tokio::time::sleep(debounce);
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) if counts(&targets, &event) => {
                        quiet.as_mut().reset(Instant::now() + debounce);
                    }
                    Some(_) => {}
                    None => return,
                },
                () = &mut quiet => break,
                () = stopped(&mut stop) => return,
            }
        }
        if let Some(dir) = &targets.dynamic {
            // The path may lead to another directory now (a repointed symlink).
            let _ = watcher.unwatch(dir);
            if let Err(err) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %err, "cannot watch the dynamic directory");
            }
        }
        reloader.reload(Trigger::Watch, None).await;
    }
}

/// Whether an event (or a watch error) should lead to a reload.
fn counts(targets: &Targets, event: &notify::Result<Event>) -> bool {
    match event {
        Ok(event) => targets.relevant(event),
        Err(err) => {
            // Events may have been lost: read everything again.
            tracing::warn!(error = %err, "the config watch reported an error");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, RenameMode};

    fn event(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    fn targets() -> Targets {
        Targets::new(
            Path::new("/etc/sluice/sluice.toml"),
            Some(Path::new("/etc/sluice/conf.d")),
        )
    }

    #[test]
    fn watches_the_main_directory_and_the_dynamic_one() {
        let t = targets();
        let dirs: Vec<_> = t.dirs().collect();
        assert_eq!(
            dirs,
            [Path::new("/etc/sluice"), Path::new("/etc/sluice/conf.d")]
        );
    }

    #[test]
    fn the_entries_that_count() {
        let t = targets();
        let rename_to = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        let create = EventKind::Create(CreateKind::File);
        // The main file, the dynamic dir's own entry (a repointed symlink), kubelet's swap.
        assert!(t.relevant(&event(rename_to, "/etc/sluice/sluice.toml")));
        assert!(t.relevant(&event(create, "/etc/sluice/conf.d")));
        assert!(t.relevant(&event(rename_to, "/etc/sluice/..data")));
        assert!(t.relevant(&event(rename_to, "/etc/sluice/conf.d/..data")));
        // Any visible file of the dynamic dir.
        assert!(t.relevant(&event(create, "/etc/sluice/conf.d/20-routes.toml")));
        // Not a conf-agent's next version beside the live one, not kubelet's staging.
        assert!(!t.relevant(&event(create, "/etc/sluice/conf.d_20260101")));
        assert!(!t.relevant(&event(create, "/etc/sluice/conf.d/..2026_01_01_00_00_00.1")));
        assert!(!t.relevant(&event(create, "/etc/sluice/conf.d/..data_tmp")));
        assert!(!t.relevant(&event(create, "/etc/sluice/conf.d/.20-routes.toml.swp")));
        assert!(!t.relevant(&event(create, "/var/log/other")));
    }

    #[test]
    fn reads_do_not_count_but_writes_do() {
        let t = targets();
        let path = "/etc/sluice/conf.d/20-routes.toml";
        assert!(!t.relevant(&event(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            path
        )));
        assert!(!t.relevant(&event(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            path
        )));
        assert!(t.relevant(&event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            path
        )));
        assert!(t.relevant(&event(EventKind::Modify(ModifyKind::Any), path)));
    }

    #[test]
    fn a_dynamic_dir_elsewhere_has_its_parent_watched() {
        let t = Targets::new(
            Path::new("/etc/sluice/sluice.toml"),
            Some(Path::new("/srv/conf/live")),
        );
        let dirs: Vec<_> = t.dirs().collect();
        assert_eq!(
            dirs,
            [
                Path::new("/etc/sluice"),
                Path::new("/srv/conf"),
                Path::new("/srv/conf/live")
            ]
        );
        let create = EventKind::Create(CreateKind::File);
        assert!(t.relevant(&event(create, "/srv/conf/live")));
        assert!(!t.relevant(&event(create, "/srv/conf/live_2")));
        assert!(!t.relevant(&event(create, "/etc/sluice/live")));
    }
}
