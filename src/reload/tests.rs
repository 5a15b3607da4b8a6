use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Outcome, Reloader, Trigger};
use crate::config::{self, compile};
use crate::metrics::Metrics;

fn reloader(dir: &std::path::Path) -> Reloader {
    let main = dir.join("sluice.toml");
    std::fs::write(
        &main,
        "[reload]\nwatch = false\n[[clusters]]\nname = \"m\"\nbackends = [{ url = \"mock://m\" }]\n\
         [[routes]]\nname = \"r\"\ncluster = \"m\"\n",
    )
    .unwrap();
    let config = config::load(&main).unwrap();
    let metrics = Arc::new(Metrics::new());
    let snapshot =
        compile::snapshot(&config.dynamic, &config.static_config.upstream, &metrics).unwrap();
    Reloader::new(
        &config,
        Arc::new(ArcSwap::from_pointee(snapshot)),
        metrics,
        false,
    )
}

#[test]
fn a_replaced_snapshot_is_freed_once_its_last_request_ends() {
    let dir = tempfile::tempdir().unwrap();
    let reloader = reloader(dir.path());
    // A request in flight holds the running snapshot.
    let request = reloader.state.load_full();
    assert!(matches!(
        reloader.reload_blocking(Trigger::Api, None),
        Outcome::Applied(_)
    ));
    assert!(reloader.has_retired());
    assert_eq!(reloader.reap(), 0, "freed while a request holds it");
    drop(request);
    assert_eq!(reloader.reap(), 1);
    assert!(!reloader.has_retired());

    // With no request on it, the reload itself frees the old one.
    assert!(matches!(
        reloader.reload_blocking(Trigger::Signal, None),
        Outcome::Applied(_)
    ));
    assert!(!reloader.has_retired());
}

#[test]
fn the_start_is_the_first_last_reload_and_a_failure_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let reloader = reloader(dir.path());
    let start = reloader.last();
    assert_eq!((start.trigger, start.ok), (Trigger::Start, true));
    std::fs::write(
        dir.path().join("sluice.toml"),
        "[[routes]]\nname = \"r\"\ncluster = \"x\"\n",
    )
    .unwrap();
    let Outcome::Rejected(errors) = reloader.reload_blocking(Trigger::Watch, None) else {
        panic!("a route without its cluster was taken");
    };
    assert_eq!(errors[0].key, "routes[0].cluster");
    let last = reloader.last();
    assert_eq!((last.trigger, last.ok), (Trigger::Watch, false));
    assert_eq!(
        last.version, start.version,
        "the running version is unchanged"
    );
    assert_eq!(last.error.as_deref(), Some(errors[0].to_string().as_str()));
}
