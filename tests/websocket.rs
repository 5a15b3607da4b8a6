//! WebSocket tunnels through the gateway, driven by a real WebSocket client library.

mod common;

use std::time::Duration;

use common::{raw, Gateway};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

const HANG_GUARD: Duration = Duration::from_secs(10);

async fn gateway(backend: &str, route_extra: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "rt"
        backends = [{{ url = "{backend}" }}]
        [[routes]]
        name = "realtime"
        cluster = "rt"
        match = {{ path_prefix = "/v1/realtime" }}
        {route_extra}
        [[routes]]
        name = "plain"
        cluster = "rt"
        "#
    ))
    .await
}

#[tokio::test]
async fn echo_through_the_mock_backend() {
    let gw = gateway("mock://m", "websocket = true").await;
    timeout(HANG_GUARD, async {
        let url = format!("ws://{}/v1/realtime?model=m", gw.http);
        let (mut ws, response) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(response.status(), 101);
        assert!(!response.headers()["x-request-id"].is_empty());
        assert_eq!(gw.metric("sluice_websocket_tunnels_open").await, 1.0);
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![1u8, 2, 3])
        );
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await
    .expect("hang");
    let up = r#"sluice_websocket_bytes_total{direction="client_to_upstream"}"#;
    assert!(gw.metric(up).await > 0.0);
    gw.stop().await;
}

#[tokio::test]
async fn a_large_message_crosses_the_tunnel_whole_both_ways() {
    let gw = gateway("mock://m", "websocket = true").await;
    timeout(HANG_GUARD, async {
        let url = format!("ws://{}/v1/realtime?model=m", gw.http);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        // Larger than the copy buffers' most, so they grow on the way; then a small one,
        // after which they shrink back.
        let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(large.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(large));
        ws.send(Message::text("small")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("small"));
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await
    .expect("hang");
    gw.stop().await;
}

#[tokio::test]
#[allow(clippy::result_large_err)] // the callback's type is tungstenite's
async fn echo_through_a_real_upstream_with_its_headers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = tokio::sync::oneshot::channel();
    let upstream = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut seen_tx = Some(seen_tx);
        let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                        mut response: tokio_tungstenite::tungstenite::handshake::server::Response| {
            let headers = req.headers().clone();
            if let Some(tx) = seen_tx.take() {
                let _ = tx.send(headers);
            }
            // The chosen subprotocol must come back to the client through the tunnel.
            response
                .headers_mut()
                .insert("sec-websocket-protocol", "realtime".parse().unwrap());
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(stream, callback)
            .await
            .unwrap();
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() {
                ws.send(Message::text(format!(
                    "echo: {}",
                    message.to_text().unwrap()
                )))
                .await
                .unwrap();
            }
        }
    });
    let gw = gateway(&format!("http://{addr}"), "websocket = true").await;
    timeout(HANG_GUARD, async {
        let request = http::Request::get(format!("ws://{}/v1/realtime", gw.http))
            .header("host", gw.http.to_string())
            .header("sec-websocket-protocol", "realtime")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let headers = seen.await.unwrap();
        assert_eq!(headers["sec-websocket-protocol"], "realtime");
        assert_eq!(headers["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("echo: hi"));
        ws.close(None).await.unwrap();
    })
    .await
    .expect("hang");
    upstream.abort();
    gw.stop().await;
}

#[tokio::test]
async fn an_upgrade_on_a_route_that_does_not_allow_it_is_refused() {
    let gw = gateway("mock://m", "websocket = true").await;
    let answer = raw(
        gw.http,
        b"GET /elsewhere HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("\"code\":\"websocket_not_allowed\""),
        "{answer}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_handshake_without_a_key_is_400() {
    let gw = gateway("mock://m", "websocket = true").await;
    let answer = raw(
        gw.http,
        b"GET /v1/realtime HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("\"code\":\"invalid_websocket_handshake\""),
        "{answer}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_tunnel_is_closed() {
    let gw = gateway(
        "mock://m",
        "websocket = true\nwebsocket_idle_timeout = \"200ms\"",
    )
    .await;
    timeout(HANG_GUARD, async {
        let url = format!("ws://{}/v1/realtime", gw.http);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ws.send(Message::text("once")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("once"));
        // Then silence: the gateway closes the tunnel, so the stream ends.
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await
    .expect("the idle tunnel was never closed");
    while gw.metric("sluice_websocket_tunnels_open").await != 0.0 {
        tokio::task::yield_now().await;
    }
    gw.stop().await;
}
