//! SIGHUP reloads the real binary from its live files; a bad file is refused and the
//! process keeps serving the config it had.

mod common;

use std::net::SocketAddr;
use std::process::Child;

use common::binary::{self, signal};
use common::get;
use common::reload::eventually;

/// The binary, started with `dir/sluice.toml`.
fn spawn_gateway(dir: &std::path::Path) -> (Child, SocketAddr, SocketAddr) {
    binary::spawn(&dir.join("sluice.toml"))
}

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

#[tokio::test]
async fn sighup_reloads_the_live_files() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf.d");
    std::fs::create_dir(&conf).unwrap();
    // The watch is off: only the signal reloads.
    std::fs::write(
        dir.path().join("sluice.toml"),
        "dynamic_dir = \"conf.d\"\n[reload]\nwatch = false\n",
    )
    .unwrap();
    std::fs::write(conf.join("routes.toml"), routes(&["a"])).unwrap();
    let (mut child, http, monitor) = spawn_gateway(dir.path());
    let route = |name: &str| {
        let url = format!("http://{http}/{name}/models");
        async move { get(&url).await.status.as_u16() }
    };
    let last_reload =
        || async { get(&format!("http://{monitor}/status")).await.json()["last_reload"].clone() };
    assert_eq!(route("b").await, 404);

    std::fs::write(conf.join("routes.toml"), routes(&["a", "b"])).unwrap();
    signal(&child, "HUP");
    eventually("route b answers", || async { route("b").await == 200 }).await;
    let last = last_reload().await;
    assert_eq!(last["trigger"], "signal");
    assert_eq!(last["ok"], true);

    // A bad file: refused, and the process serves on with what it had.
    std::fs::write(conf.join("routes.toml"), "[[routes]]\nname = 1\n").unwrap();
    signal(&child, "HUP");
    eventually("the bad file is refused", || async {
        last_reload().await["ok"] == false
    })
    .await;
    assert!(last_reload().await["error"]
        .as_str()
        .unwrap()
        .contains("routes.toml:routes[0].name: invalid type"));
    assert_eq!(route("b").await, 200);

    signal(&child, "TERM");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
