//! Routing and forwarding through a real gateway to real upstreams.

mod common;

use common::{get, Gateway, Upstream};

#[tokio::test]
async fn routes_by_path_prefix_to_the_right_cluster() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let gw = Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "a"
        backends = [{{ url = "{a}" }}]
        [[clusters]]
        name = "b"
        backends = [{{ url = "{b}" }}]
        [[routes]]
        name = "root"
        cluster = "a"
        [[routes]]
        name = "v1"
        cluster = "b"
        match = {{ path_prefix = "/v1/" }}
        "#,
        a = a.url(),
        b = b.url()
    ))
    .await;
    assert_eq!(get(&gw.url("/v1/models")).await.header("x-upstream"), "b");
    assert_eq!(get(&gw.url("/other")).await.header("x-upstream"), "a");
    gw.stop().await;
}
