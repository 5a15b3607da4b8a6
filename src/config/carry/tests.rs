use std::path::PathBuf;
use std::sync::Arc;

use super::Previous;
use crate::config::compile::snapshot_with;
use crate::config::file::{DynamicFile, UpstreamDefaults};
use crate::config::{DynamicSources, Snapshot};
use crate::metrics::Metrics;
use crate::upstream::{HttpBackend, Target};

fn compile(toml: &str, previous: &mut Previous, metrics: &Metrics) -> Snapshot {
    let file: DynamicFile = toml::from_str(toml).unwrap();
    let sources = DynamicSources {
        files: vec![(PathBuf::from("test.toml"), file)],
        version: "test".to_owned(),
        redis: false,
    };
    snapshot_with(&sources, &UpstreamDefaults::default(), metrics, previous).unwrap()
}

/// The HTTP backends of cluster `name`, in order.
fn http(snapshot: &Snapshot, name: &str) -> Vec<Arc<HttpBackend>> {
    let cluster = snapshot.clusters.iter().find(|c| c.name == name).unwrap();
    cluster
        .backends
        .iter()
        .filter_map(|b| match &b.target {
            Target::Http(http) => Some(Arc::clone(http)),
            Target::Mock(_) => None,
        })
        .collect()
}

const TWO: &str = r#"
[[clusters]]
name = "a"
backends = [{ url = "http://127.0.0.1:1" }, { url = "http://127.0.0.1:2" }, { url = "mock://m" }]
[[clusters]]
name = "b"
backends = [{ url = "http://127.0.0.1:1" }]
"#;

#[test]
fn an_unchanged_backend_keeps_its_pool() {
    let metrics = Metrics::new();
    let first = compile(TWO, &mut Previous::none(), &metrics);
    let mut previous = Previous::new(&first);
    let second = compile(TWO, &mut previous, &metrics);
    assert_eq!((previous.pools_kept, previous.pools_new), (3, 0));
    for name in ["a", "b"] {
        for (old, new) in http(&first, name).iter().zip(http(&second, name)) {
            assert!(Arc::ptr_eq(old, &new), "cluster {name}");
        }
    }
    // The same URL in another cluster is another backend, with a pool of its own.
    assert!(!Arc::ptr_eq(&http(&second, "a")[0], &http(&second, "b")[0]));
}

#[test]
fn changed_settings_or_names_get_a_new_pool() {
    let metrics = Metrics::new();
    let first = compile(TWO, &mut Previous::none(), &metrics);
    let changed = r#"
[[clusters]]
name = "a"
pool_max_idle_per_host = 8
backends = [{ url = "http://127.0.0.1:1" }, { url = "http://127.0.0.1:2" }]
[[clusters]]
name = "renamed"
backends = [{ url = "http://127.0.0.1:1" }]
"#;
    let mut previous = Previous::new(&first);
    let second = compile(changed, &mut previous, &metrics);
    assert_eq!((previous.pools_kept, previous.pools_new), (0, 3));
    assert!(!Arc::ptr_eq(&http(&first, "a")[0], &http(&second, "a")[0]));
    assert!(!Arc::ptr_eq(
        &http(&first, "b")[0],
        &http(&second, "renamed")[0]
    ));
}

#[test]
fn a_url_listed_twice_maps_in_order_and_removed_ones_are_left_behind() {
    let metrics = Metrics::new();
    let twice = r#"
[[clusters]]
name = "a"
backends = [{ url = "http://127.0.0.1:1" }, { url = "http://127.0.0.1:1", weight = 2 }]
"#;
    let once = r#"
[[clusters]]
name = "a"
backends = [{ url = "http://127.0.0.1:1", weight = 5 }, { url = "http://127.0.0.1:3" }]
"#;
    let first = compile(twice, &mut Previous::none(), &metrics);
    let mut previous = Previous::new(&first);
    let second = compile(twice, &mut previous, &metrics);
    let (old, new) = (http(&first, "a"), http(&second, "a"));
    assert!(Arc::ptr_eq(&old[0], &new[0]) && Arc::ptr_eq(&old[1], &new[1]));
    assert!(!Arc::ptr_eq(&new[0], &new[1]));

    // A weight is not a client setting: the first keeps its pool; the new URL gets one.
    let mut previous = Previous::new(&second);
    let third = compile(once, &mut previous, &metrics);
    assert_eq!((previous.pools_kept, previous.pools_new), (1, 1));
    assert!(Arc::ptr_eq(&new[0], &http(&third, "a")[0]));
}

#[test]
fn lookups_by_name_for_state_kept_elsewhere() {
    let metrics = Metrics::new();
    let toml = format!("{TWO}\n[[routes]]\nname = \"r\"\ncluster = \"a\"\n");
    let first = compile(&toml, &mut Previous::none(), &metrics);
    let mut previous = Previous::new(&first);
    assert!(Arc::ptr_eq(
        previous.cluster("a").unwrap(),
        &first.clusters[0]
    ));
    assert_eq!(previous.route("r").unwrap().name, "r");
    assert!(previous.route("nope").is_none());
    let backend = previous.take_backend("a", "http://127.0.0.1:2").unwrap();
    assert_eq!(backend.url, "http://127.0.0.1:2");
    assert!(previous.take_backend("a", "http://127.0.0.1:2").is_none());
    assert!(Previous::none().snapshot().is_none());
}
