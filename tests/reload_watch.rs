//! The watch on the conf directory: kubelet's `..data` swap of a ConfigMap volume, a file
//! replaced by a rename, and a bad file refused, each picked up with no call from outside.

mod common;

use common::reload::{eventually, ConfigMapVolume};
use common::{get, Gateway};

/// The main file, with the routing in `conf.d` (a ConfigMap volume in these tests) and a
/// short debounce.
const MAIN: &str = "dynamic_dir = \"conf.d\"\n[reload]\nwatch_debounce = \"50ms\"\n";

/// Cluster `models` (the mock) and a route `/NAME/` for each name, sent to the mock as `/v1/`.
fn routes(names: &[&str]) -> String {
    let mut toml =
        "[[clusters]]\nname = \"models\"\nbackends = [{ url = \"mock://m\" }]\n".to_owned();
    for name in names {
        toml.push_str(&format!(
            "[[routes]]\nname = \"{name}\"\ncluster = \"models\"\nrewrite_prefix = \"/v1/\"\n\
             match = {{ path_prefix = \"/{name}/\" }}\n"
        ));
    }
    toml
}

async fn route_status(gw: &Gateway, route: &str) -> u16 {
    get(&gw.url(&format!("/{route}/models")))
        .await
        .status
        .as_u16()
}

async fn last_reload(gw: &Gateway) -> serde_json::Value {
    get(&gw.monitor_url("/status")).await.json()["last_reload"].clone()
}

#[tokio::test]
async fn a_configmap_data_swap_is_picked_up_by_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let mut volume = ConfigMapVolume::create(
        &dir.path().join("conf.d"),
        &[("routes.toml", &routes(&["a"]))],
    );
    let gw = Gateway::start_in(dir, MAIN).await;
    assert_eq!(route_status(&gw, "a").await, 200);
    assert_eq!(route_status(&gw, "b").await, 404);

    // kubelet's update: a new timestamped directory, `..data_tmp` renamed over `..data`,
    // the old directory removed. Route a goes, route b comes.
    volume.update(&[("routes.toml", &routes(&["b"]))]);
    eventually("route b answers", || async {
        route_status(&gw, "b").await == 200
    })
    .await;
    assert_eq!(route_status(&gw, "a").await, 404);
    let last = last_reload(&gw).await;
    assert_eq!(last["trigger"], "watch");
    assert_eq!(last["ok"], true);

    // A second key added to the ConfigMap: its link appears beside the first.
    let extra = "[[routes]]\nname = \"c\"\ncluster = \"models\"\nrewrite_prefix = \"/v1/\"\n\
                 match = { path_prefix = \"/c/\" }\n";
    volume.update(&[("routes.toml", &routes(&["b"])), ("extra.toml", extra)]);
    eventually("route c answers", || async {
        route_status(&gw, "c").await == 200
    })
    .await;
    assert_eq!(route_status(&gw, "b").await, 200);
    gw.stop().await;
}

#[tokio::test]
async fn a_file_replaced_by_rename_is_picked_up_and_a_bad_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf.d");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("routes.toml"), routes(&["a"])).unwrap();
    let gw = Gateway::start_in(dir, MAIN).await;
    let running = get(&gw.monitor_url("/status")).await.json()["config_version"].clone();

    // An editor's save: a hidden temporary file renamed over the real one.
    let replace = |text: &str| {
        let tmp = conf.join(".routes.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, conf.join("routes.toml")).unwrap();
    };
    replace("[[routes]]\nname = \"broken\"\ncluster = \"nope\"\n");
    eventually("the bad file is refused", || async {
        last_reload(&gw).await["ok"] == false
    })
    .await;
    let last = last_reload(&gw).await;
    assert_eq!(last["trigger"], "watch");
    let want = format!(
        "{}:routes[0].cluster: route `broken` names cluster `nope`, which is not defined",
        conf.join("routes.toml").display()
    );
    assert_eq!(last["error"], want.as_str());
    assert_eq!(last["version"], running);
    // The running config is untouched.
    assert_eq!(route_status(&gw, "a").await, 200);
    assert_eq!(
        gw.metric(r#"sluice_config_reload_total{result="error"}"#)
            .await,
        1.0
    );

    replace(&routes(&["a", "b"]));
    eventually("route b answers", || async {
        route_status(&gw, "b").await == 200
    })
    .await;
    assert_eq!(last_reload(&gw).await["ok"], true);
    gw.stop().await;
}

#[tokio::test]
async fn a_watch_event_before_the_agent_repoints_does_not_undo_a_path_reload() {
    use common::reload::{assert_applied, reload, repoint, write_version};
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("conf.d");
    let first = write_version(&live, "1", &[("routes.toml", &routes(&["a"]))]);
    std::os::unix::fs::symlink(&first, &live).unwrap();
    let gw = Gateway::start_in(dir, MAIN).await;
    let skipped = r#"sluice_config_reload_total{result="skipped"}"#;

    // The agent's reload of version 2 takes effect...
    let second = write_version(&live, "2", &[("routes.toml", &routes(&["b"]))]);
    assert_applied(&reload(&gw, "sluice", Some(&second)).await);
    // ...and before it repoints `conf.d`, something touches the main file. The watch must
    // not read the live directory, still version 1, and bring route a back.
    let main = gw.dir().join("sluice.toml");
    std::fs::write(&main, std::fs::read(&main).unwrap()).unwrap();
    eventually("the watch skips", || async {
        gw.metric(skipped).await == 1.0
    })
    .await;
    assert_eq!(route_status(&gw, "b").await, 200);
    assert_eq!(route_status(&gw, "a").await, 404);

    // The repoint itself reloads the live directory, now version 2; from then on a change
    // in the live directory applies again.
    repoint(&live, &second);
    eventually("the watch reloads the repointed directory", || async {
        last_reload(&gw).await["trigger"] == "watch"
    })
    .await;
    std::fs::write(second.join("routes.toml"), routes(&["b", "c"])).unwrap();
    eventually("route c answers", || async {
        route_status(&gw, "c").await == 200
    })
    .await;
    assert_eq!(gw.metric(skipped).await, 1.0);
    gw.stop().await;
}
