//! Streaming through the gateway: SSE pass-through event by event, usage accounting,
//! include_usage, stream timeouts, cancellation and upstream failure mid-stream.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Gateway, Reader, StreamUpstream};
use serde_json::json;
use tokio::time::timeout;

const HANG_GUARD: Duration = Duration::from_secs(10);

fn chat(stream: bool) -> serde_json::Value {
    json!({"model": "m1", "stream": stream, "messages": [{"role": "user", "content": "hi there"}]})
}

async fn gateway(upstream: &str, route_extra: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
        [[clusters]]
        name = "up"
        backends = [{{ url = "{upstream}" }}]
        [[routes]]
        name = "llm"
        cluster = "up"
        {route_extra}
        "#
    ))
    .await
}

fn event(i: usize) -> Bytes {
    Bytes::from(format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i} \"}}}}]}}\n\n"
    ))
}

#[tokio::test]
async fn each_event_reaches_the_client_before_the_next_is_sent() {
    let mut upstream = StreamUpstream::start().await;
    let gw = gateway(&upstream.url(), "").await;
    timeout(HANG_GUARD, async {
        let mut client = Reader::post(gw.http, "/v1/chat/completions", &chat(true)).await;
        let stream = upstream.next().await;
        assert_eq!(client.status, 200);
        assert_eq!(client.headers["content-type"], "text/event-stream");
        for i in 0..5 {
            stream.tx.send(Ok(event(i))).await.unwrap();
            // The next event is only sent once this one has arrived: a buffering proxy
            // would hang here.
            let got = client.next().await.unwrap().unwrap();
            assert_eq!(got, event(i));
        }
        stream
            .tx
            .send(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
            .await
            .unwrap();
        drop(stream);
        let (rest, err) = client.rest().await;
        assert_eq!(rest, "data: [DONE]\n\n");
        assert!(err.is_none());
    })
    .await
    .expect("hang");
    gw.stop().await;
}

#[tokio::test]
async fn usage_split_across_reads_and_comments_is_counted_once() {
    let mut upstream = StreamUpstream::start().await;
    let gw = gateway(&upstream.url(), "").await;
    timeout(HANG_GUARD, async {
        let mut client = Reader::post(gw.http, "/v1/chat/completions", &chat(true)).await;
        let stream = upstream.next().await;
        let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7}}\r\n\r\n";
        let (a, b) = usage.split_at(30);
        for part in [": ping\n\n", &String::from_utf8_lossy(&event(0)), a, b, "data: [DONE]\n\n"] {
            stream.tx.send(Ok(Bytes::from(part.to_owned()))).await.unwrap();
            client.next().await.unwrap().unwrap();
        }
        drop(stream);
        assert!(client.rest().await.1.is_none());
    })
    .await
    .expect("hang");
    let tokens = |kind: &str, what: &str| {
        format!(
            "gen_ai_client_token_usage_{what}{{gen_ai_request_model=\"m1\",gen_ai_token_type=\"{kind}\",route=\"llm\"}}"
        )
    };
    wait_for_metric(&gw, &tokens("input", "count"), 1.0).await;
    assert_eq!(gw.metric(&tokens("input", "sum")).await, 11.0);
    assert_eq!(gw.metric(&tokens("output", "count")).await, 1.0);
    assert_eq!(gw.metric(&tokens("output", "sum")).await, 7.0);
    let ended = r#"sluice_llm_streams_ended_total{reason="complete",route="llm"}"#;
    assert_eq!(gw.metric(ended).await, 1.0);
    assert_eq!(gw.metric("sluice_llm_active_streams").await, 0.0);
    let ttft =
        r#"gen_ai_server_time_to_first_token_seconds_count{gen_ai_request_model="m1",route="llm"}"#;
    assert_eq!(gw.metric(ttft).await, 1.0);
    gw.stop().await;
}

#[tokio::test]
async fn usage_of_a_non_streamed_answer_is_counted_once() {
    let gw = gateway("mock://m?tokens=5", "").await;
    let answer = common::post_json(&gw.url("/v1/chat/completions"), &chat(false)).await;
    assert_eq!(answer.status, 200);
    let out = r#"gen_ai_client_token_usage_sum{gen_ai_request_model="m1",gen_ai_token_type="output",route="llm"}"#;
    wait_for_metric(&gw, out, 5.0).await;
    let count = r#"gen_ai_client_token_usage_count{gen_ai_request_model="m1",gen_ai_token_type="output",route="llm"}"#;
    assert_eq!(gw.metric(count).await, 1.0);
    let input = r#"gen_ai_client_token_usage_sum{gen_ai_request_model="m1",gen_ai_token_type="input",route="llm"}"#;
    assert_eq!(gw.metric(input).await, 2.0);
    gw.stop().await;
}

#[tokio::test]
async fn include_usage_is_added_and_its_chunk_kept_from_the_client() {
    let gw = gateway("mock://m?tokens=3", "include_usage = true").await;
    let mut client = Reader::post(gw.http, "/v1/chat/completions", &chat(true)).await;
    let (text, err) = timeout(HANG_GUARD, client.rest()).await.expect("hang");
    assert!(err.is_none());
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("\"choices\":[]"),
        "the usage chunk reached the client: {text}"
    );
    let out = r#"gen_ai_client_token_usage_sum{gen_ai_request_model="m1",gen_ai_token_type="output",route="llm"}"#;
    wait_for_metric(&gw, out, 3.0).await;
    let injected = r#"sluice_llm_usage_injected_total{route="llm"}"#;
    assert_eq!(gw.metric(injected).await, 1.0);

    // A client with stream_options but no include_usage: the option is added to its
    // object (a second key would make the backend refuse the request).
    let mut partial = chat(true);
    partial["stream_options"] = json!({});
    let mut client = Reader::post(gw.http, "/v1/chat/completions", &partial).await;
    assert_eq!(client.status, 200);
    let (text, err) = timeout(HANG_GUARD, client.rest()).await.expect("hang");
    assert!(
        err.is_none() && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert!(!text.contains("\"choices\":[]"), "{text}");
    assert_eq!(gw.metric(injected).await, 2.0);

    // A client that asked for usage gets its chunk, and nothing is injected.
    let mut asked = chat(true);
    asked["stream_options"] = json!({"include_usage": true});
    let mut client = Reader::post(gw.http, "/v1/chat/completions", &asked).await;
    let (text, _) = timeout(HANG_GUARD, client.rest()).await.expect("hang");
    assert!(text.contains("\"choices\":[],\"usage\":{"), "{text}");
    assert_eq!(gw.metric(injected).await, 2.0);
    gw.stop().await;
}

#[tokio::test]
async fn the_upstream_sees_include_usage_in_the_body() {
    let mut upstream = StreamUpstream::start().await;
    let gw = gateway(&upstream.url(), "include_usage = true").await;
    let client = tokio::spawn(async move {
        let mut client = Reader::post(gw.http, "/v1/chat/completions", &chat(true)).await;
        client.rest().await;
        gw
    });
    let stream = timeout(HANG_GUARD, upstream.next()).await.expect("hang");
    let body: serde_json::Value = serde_json::from_slice(&stream.seen.body).unwrap();
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["messages"][0]["content"], "hi there");
    assert_eq!(
        stream.seen.headers["content-length"],
        stream.seen.body.len().to_string().as_str()
    );
    drop(stream);
    client.await.unwrap().stop().await;
}

#[tokio::test]
async fn first_byte_timeout_cuts_a_stream_that_never_starts() {
    let mut upstream = StreamUpstream::start().await;
    let gw = gateway(&upstream.url(), r#"first_byte_timeout = "200ms""#).await;
    timeout(HANG_GUARD, async {
        let mut client = Reader::post(gw.http, "/v1/chat/completions", &chat(true)).await;
        let _stream = upstream.next().await; // holds the head, sends no body
        assert_eq!(client.status, 200);
        let (text, err) = client.rest().await;
        assert!(err.is_some(), "a cut stream ended cleanly: {text}");
    })
    .await
    .expect("hang");
    let ended = r#"sluice_llm_streams_ended_total{reason="first_byte_timeout",route="llm"}"#;
    wait_for_metric(&gw, ended, 1.0).await;
    gw.stop().await;
}

#[tokio::test]
async fn idle_timeout_cuts_a_stalled_stream_and_sse_error_event_says_why() {
    let gw = gateway(
        "mock://m?tokens=10",
        r#"idle_timeout = "200ms"
        sse_error_event = true"#,
    )
    .await;
    let mut client = Reader::post_with(
        gw.http,
        "/v1/chat/completions",
        &chat(true),
        &[("x-mock-stall-after", "2")],
    )
    .await;
    let (text, err) = timeout(HANG_GUARD, client.rest()).await.expect("hang");
    assert!(err.is_some(), "a stalled stream ended cleanly");
    assert_eq!(text.matches("\"content\":\"").count(), 3, "{text}"); // role + 2 tokens
    assert!(
        text.ends_with("\n\n") && text.contains("event: error\ndata: {\"error\""),
        "{text}"
    );
    assert!(
        text.contains("\"code\":\"upstream_idle_timeout\""),
        "{text}"
    );
    let ended = r#"sluice_llm_streams_ended_total{reason="idle_timeout",route="llm"}"#;
    wait_for_metric(&gw, ended, 1.0).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_stream_that_keeps_sending_outlives_its_idle_timeout_many_times() {
    // Chunks every 50 ms for 3 s under a 1 s idle timeout: the timer fires early several
    // times and is moved on each time, never cutting the stream.
    let gw = gateway("mock://m?tokens=60&delay=50ms", r#"idle_timeout = "1s""#).await;
    let mut client = Reader::post(gw.http, "/v1/chat/completions", &chat(true)).await;
    let (text, err) = timeout(HANG_GUARD, client.rest()).await.expect("hang");
    assert!(err.is_none(), "a live stream was cut: {err:?}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    gw.stop().await;
}

#[tokio::test]
async fn the_first_byte_timeout_ends_with_the_first_byte() {
    // No idle or total timeout: once data flows, the first-byte timer must not fire.
    let mut upstream = StreamUpstream::start().await;
    let gw = gateway(
        &upstream.url(),
        "first_byte_timeout = \"200ms\"\nidle_timeout = \"0s\"\ntotal_timeout = \"0s\"",
    )
    .await;
    timeout(HANG_GUARD, async {
        let mut client = Reader::post(gw.http, "/v1/chat/completions", &chat(true)).await;
        let stream = upstream.next().await;
        stream.tx.send(Ok(event(0))).await.unwrap();
        assert_eq!(client.next().await.unwrap().unwrap(), event(0));
        // Past the first-byte deadline with nothing sent: that timer is over.
        tokio::time::sleep(Duration::from_millis(400)).await;
        stream.tx.send(Ok(event(1))).await.unwrap();
        drop(stream);
        let (rest, err) = client.rest().await;
        assert!(err.is_none(), "a live stream was cut: {err:?}");
        assert_eq!(rest.as_bytes(), event(1));
    })
    .await
    .expect("hang");
    gw.stop().await;
}

#[tokio::test]
async fn total_timeout_cuts_a_slow_stream() {
    let gw = gateway(
        "mock://m?tokens=1000&delay=50ms",
        r#"total_timeout = "300ms""#,
    )
    .await;
    let mut client = Reader::post(gw.http, "/v1/chat/completions", &chat(true)).await;
    let (_, err) = timeout(HANG_GUARD, client.rest()).await.expect("hang");
    assert!(err.is_some());
    let ended = r#"sluice_llm_streams_ended_total{reason="total_timeout",route="llm"}"#;
    wait_for_metric(&gw, ended, 1.0).await;
    gw.stop().await;
}

#[tokio::test]
async fn upstream_death_mid_stream_is_never_a_clean_end() {
    let mut upstream = StreamUpstream::start().await;
    let gw = gateway(&upstream.url(), "").await;
    timeout(HANG_GUARD, async {
        let mut client = Reader::post(gw.http, "/v1/chat/completions", &chat(true)).await;
        let stream = upstream.next().await;
        stream.tx.send(Ok(event(0))).await.unwrap();
        assert_eq!(client.next().await.unwrap().unwrap(), event(0));
        stream
            .tx
            .send(Err(std::io::Error::other("backend crashed")))
            .await
            .unwrap();
        let (rest, err) = client.rest().await;
        assert!(
            err.is_some(),
            "a dead upstream looked like a clean end: {rest:?}"
        );
        assert!(!rest.contains("[DONE]"));
    })
    .await
    .expect("hang");
    let ended = r#"sluice_llm_streams_ended_total{reason="upstream_error",route="llm"}"#;
    wait_for_metric(&gw, ended, 1.0).await;
    gw.stop().await;
}

#[tokio::test]
async fn mock_failure_mid_stream_is_cut_too() {
    let gw = gateway("mock://m?tokens=10", "").await;
    let mut client = Reader::post_with(
        gw.http,
        "/v1/chat/completions",
        &chat(true),
        &[("x-mock-fail-after", "3")],
    )
    .await;
    let (text, err) = timeout(HANG_GUARD, client.rest()).await.expect("hang");
    assert!(err.is_some());
    // What the backend sent before it failed still reaches the client: role + 3 tokens.
    assert_eq!(text.matches("\"content\":\"").count(), 4, "{text}");
    assert!(!text.contains("[DONE]"));
    gw.stop().await;
}

#[tokio::test]
async fn a_client_leaving_mid_stream_cancels_the_upstream() {
    let mut upstream = StreamUpstream::start().await;
    let gw = gateway(&upstream.url(), "").await;
    timeout(HANG_GUARD, async {
        let mut client = Reader::post(gw.http, "/v1/chat/completions", &chat(true)).await;
        let stream = upstream.next().await;
        stream.tx.send(Ok(event(0))).await.unwrap();
        client.next().await.unwrap().unwrap();
        drop(client);
        // The upstream's response body is dropped once sluice closes its connection.
        stream.tx.closed().await;
    })
    .await
    .expect("the upstream never saw the cancel");
    let ended = r#"sluice_llm_streams_ended_total{reason="client_gone",route="llm"}"#;
    wait_for_metric(&gw, ended, 1.0).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_client_leaving_before_the_first_token_cancels_the_upstream() {
    let mut upstream = StreamUpstream::start().await;
    let gw = gateway(&upstream.url(), "").await;
    timeout(HANG_GUARD, async {
        let client = Reader::post(gw.http, "/v1/chat/completions", &chat(true)).await;
        let stream = upstream.next().await;
        drop(client);
        stream.tx.closed().await;
    })
    .await
    .expect("the upstream never saw the cancel");
    gw.stop().await;
}

#[tokio::test]
async fn a_thousand_concurrent_streams() {
    let gw = gateway("mock://m?tokens=8&delay=2ms", "").await;
    let addr = gw.http;
    let clients: Vec<_> = (0..1000)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Reader::post(addr, "/v1/chat/completions", &chat(true)).await;
                let (text, err) = client.rest().await;
                assert!(err.is_none());
                assert!(text.ends_with("data: [DONE]\n\n"));
                assert_eq!(text.matches("\"content\":\"").count(), 9);
            })
        })
        .collect();
    timeout(Duration::from_secs(60), async {
        for client in clients {
            client.await.unwrap();
        }
    })
    .await
    .expect("hang");
    let ended = r#"sluice_llm_streams_ended_total{reason="complete",route="llm"}"#;
    wait_for_metric(&gw, ended, 1000.0).await;
    gw.stop().await;
}

/// Waits until a metric reaches `value` (a request is counted when its body is dropped,
/// just after the client has read its end).
async fn wait_for_metric(gw: &Gateway, sample: &str, value: f64) {
    timeout(HANG_GUARD, async {
        while gw.metric(sample).await != value {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{sample} never reached {value}"));
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut() {
    let gw = Gateway::start(
        r#"
        [server]
        send_timeout = "300ms"
        [[clusters]]
        name = "up"
        backends = [{ url = "mock://m?tokens=100000" }]
        [[routes]]
        name = "llm"
        cluster = "up"
        "#,
    )
    .await;
    // A streamed answer of some megabytes, to a client that sends its request and then
    // reads nothing: once the socket buffers are full, the gateway's writes block.
    let mut socket = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let body = chat(true).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut socket, request.as_bytes())
        .await
        .unwrap();
    let ended = r#"sluice_llm_streams_ended_total{reason="client_gone",route="llm"}"#;
    wait_for_metric(&gw, ended, 1.0).await;
    drop(socket);
    gw.stop().await;
}
