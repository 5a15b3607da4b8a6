//! Zero loss: steady requests (to the mock and to a real upstream) and open SSE streams (from
//! the mock, and from a real upstream held open across every reload) run while a conf-agent
//! rewrites the config 30 times, bad versions among them. No request fails, no stream is
//! cut, every good version takes effect at once, every bad one changes nothing, and the pool
//! of the unchanged real backend survives them all.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::reload::{assert_applied, eventually, reload, repoint, write_version};
use common::{get, Gateway, Reader, StreamUpstream, Upstream};
use serde_json::json;

const VERSIONS: usize = 30;
/// Tokens of each mock stream; the stream carries one more `content` chunk (the role).
const TOKENS: usize = 20;

/// What the traffic saw, shared by its tasks.
#[derive(Default)]
struct Traffic {
    stop: AtomicBool,
    mock_ok: AtomicUsize,
    real_ok: AtomicUsize,
    stream_chunks: AtomicUsize,
    streams_done: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Traffic {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

/// The files of version `n`: the steady routes, and `/v{n}/` (the routes of earlier
/// versions are gone).
fn good(upstream: &str, sse: &str, n: usize) -> String {
    format!(
        r#"
[[clusters]]
name = "fast"
backends = [{{ url = "mock://fast" }}]
[[clusters]]
name = "slow"
backends = [{{ url = "mock://slow?tokens={TOKENS}&delay=5ms" }}]
[[clusters]]
name = "real"
backends = [{{ url = "{upstream}" }}]
[[clusters]]
name = "sse"
backends = [{{ url = "{sse}" }}]
[[routes]]
name = "mock"
cluster = "fast"
rewrite_prefix = "/v1/"
match = {{ path_prefix = "/mock/" }}
[[routes]]
name = "stream"
cluster = "slow"
rewrite_prefix = "/v1/"
match = {{ path_prefix = "/stream/" }}
[[routes]]
name = "real"
cluster = "real"
match = {{ path_prefix = "/real/" }}
[[routes]]
name = "sse"
cluster = "sse"
match = {{ path_prefix = "/sse/" }}
[[routes]]
name = "v{n}"
cluster = "fast"
rewrite_prefix = "/v1/"
match = {{ path_prefix = "/v{n}/" }}
"#
    )
}

/// A broken second file for bad version `n`, a different fault each time, and the key its
/// error must name.
fn bad(n: usize) -> (&'static str, &'static str) {
    match (n / 4) % 4 {
        0 => ("[[routes]\nname = \"x\"\n", ""),
        1 => (
            "[[routes]]\nname = \"x\"\ncluster = \"missing\"\n",
            "routes[0].cluster",
        ),
        2 => (
            "[[routes]]\nname = \"mock\"\ncluster = \"fast\"\n",
            "routes[0].name",
        ),
        _ => (
            "[[clusters]]\nname = \"x\"\nbackends = [{ url = \"ftp://h:1\" }]\n",
            "clusters[0].backends[0].url",
        ),
    }
}

async fn status_of(gw_url: &str) -> u16 {
    get(gw_url).await.status.as_u16()
}

/// Requests `path` in a loop until told to stop; each must answer 200.
fn steady(
    http: std::net::SocketAddr,
    path: &'static str,
    traffic: Arc<Traffic>,
    ok: fn(&Traffic) -> &AtomicUsize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let url = format!("http://{http}{path}");
        while !traffic.stop.load(Ordering::Relaxed) {
            let answer = get(&url).await;
            if answer.status == 200 {
                ok(&traffic).fetch_add(1, Ordering::Relaxed);
            } else {
                traffic.fail(format!("GET {path}: {} {}", answer.status, answer.text()));
            }
        }
    })
}

/// Opens mock streams one after another until told to stop; each must end cleanly with
/// every token and `[DONE]`.
fn streams(http: std::net::SocketAddr, traffic: Arc<Traffic>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let chat =
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
        while !traffic.stop.load(Ordering::Relaxed) {
            let mut reader = Reader::post(http, "/stream/chat/completions", &chat).await;
            if reader.status != 200 {
                let (text, _) = reader.rest().await;
                traffic.fail(format!("stream: {} {text}", reader.status));
                continue;
            }
            let mut text = Vec::new();
            loop {
                match reader.next().await {
                    Ok(Some(chunk)) => {
                        text.extend_from_slice(&chunk);
                        traffic.stream_chunks.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => break,
                    Err(err) => {
                        traffic.fail(format!("stream cut: {err}"));
                        break;
                    }
                }
            }
            let text = String::from_utf8_lossy(&text);
            if !text.ends_with("data: [DONE]\n\n")
                || text.matches("\"content\":\"").count() != TOKENS + 1
            {
                traffic.fail(format!("stream incomplete: {text}"));
            }
            traffic.streams_done.fetch_add(1, Ordering::Relaxed);
        }
    })
}

#[tokio::test]
async fn nothing_is_lost_while_the_config_is_rewritten_thirty_times() {
    let upstream = Upstream::echo("real").await;
    let mut sse = StreamUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("conf.d");
    let first = write_version(
        &live,
        "0",
        &[("10-routes.toml", &good(&upstream.url(), &sse.url(), 0))],
    );
    std::os::unix::fs::symlink(&first, &live).unwrap();
    // The watch is on too: it sees every repoint, and must not undo a newer `path=` reload.
    let gw = Gateway::start_in(
        dir,
        "dynamic_dir = \"conf.d\"\n[reload]\nwatch_debounce = \"20ms\"\n",
    )
    .await;

    // Streams from a real upstream, held open across every reload: one event per version.
    let chat = json!({"model": "m", "stream": true, "messages": []});
    let mut held = Vec::new();
    for _ in 0..3 {
        let reader = Reader::post(gw.http, "/sse/chat/completions", &chat).await;
        assert_eq!(reader.status, 200);
        held.push((reader, sse.next().await));
    }

    let traffic = Arc::new(Traffic::default());
    let tasks = vec![
        steady(gw.http, "/mock/models", Arc::clone(&traffic), |t| {
            &t.mock_ok
        }),
        steady(gw.http, "/real/x", Arc::clone(&traffic), |t| &t.real_ok),
        streams(gw.http, Arc::clone(&traffic)),
        streams(gw.http, Arc::clone(&traffic)),
    ];

    let mut serving = 0;
    let mut refused = 0;
    for n in 1..=VERSIONS {
        // Traffic flows between any two reloads: every kind has moved on since the last.
        let seen = (
            traffic.mock_ok.load(Ordering::Relaxed),
            traffic.real_ok.load(Ordering::Relaxed),
            traffic.stream_chunks.load(Ordering::Relaxed),
        );
        eventually("traffic moves between reloads", || async {
            traffic.mock_ok.load(Ordering::Relaxed) > seen.0
                && traffic.real_ok.load(Ordering::Relaxed) > seen.1
                && traffic.stream_chunks.load(Ordering::Relaxed) > seen.2
        })
        .await;

        let version = n.to_string();
        let is_bad = n % 4 == 3;
        refused += usize::from(is_bad);
        let files = if is_bad {
            let (text, key) = bad(n);
            let dir = write_version(
                &live,
                &version,
                &[
                    ("10-routes.toml", &good(&upstream.url(), &sse.url(), n)),
                    ("20-broken.toml", text),
                ],
            );
            let reply = reload(&gw, "server_data_conf", Some(&dir)).await;
            let error = reply["error"]
                .as_str()
                .unwrap_or_else(|| panic!("version {n} was taken: {reply}"));
            let broken = dir.join("20-broken.toml");
            let prefix = if key.is_empty() {
                format!("{}: ", broken.display())
            } else {
                format!("{}:{key}: ", broken.display())
            };
            assert!(error.starts_with(&prefix), "version {n}: {error}");
            dir
        } else {
            let dir = write_version(
                &live,
                &version,
                &[("10-routes.toml", &good(&upstream.url(), &sse.url(), n))],
            );
            assert_applied(&reload(&gw, "server_data_conf", Some(&dir)).await);
            dir
        };
        if !is_bad {
            // Taken at once: the new route answers, the previous version's is gone.
            assert_eq!(
                status_of(&gw.url(&format!("/v{n}/models"))).await,
                200,
                "version {n}"
            );
            let gone = get(&gw.url(&format!("/v{serving}/models"))).await;
            gone.assert_error(404, "route_not_found");
            repoint(&live, &files);
            serving = n;
        } else {
            // Refused: the running version still answers, the refused one's route does not.
            assert_eq!(
                status_of(&gw.url(&format!("/v{serving}/models"))).await,
                200,
                "version {n}"
            );
            get(&gw.url(&format!("/v{n}/models")))
                .await
                .assert_error(404, "route_not_found");
        }
        for (i, (reader, stream)) in held.iter_mut().enumerate() {
            let event = format!("data: {{\"version\":{n},\"stream\":{i}}}\n\n");
            stream
                .tx
                .send(Ok(Bytes::from(event.clone())))
                .await
                .unwrap();
            let got = tokio::time::timeout(Duration::from_secs(10), reader.next())
                .await
                .expect("a held stream stalled")
                .unwrap_or_else(|e| panic!("held stream {i} cut after version {n}: {e}"));
            assert_eq!(got.as_deref(), Some(event.as_bytes()));
        }
    }

    traffic.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    for (i, (mut reader, stream)) in held.into_iter().enumerate() {
        stream
            .tx
            .send(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
            .await
            .unwrap();
        drop(stream);
        let (rest, err) = reader.rest().await;
        assert!(err.is_none(), "held stream {i} ended with {err:?}");
        assert_eq!(rest, "data: [DONE]\n\n");
    }

    let failures = traffic.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
    assert!(traffic.streams_done.load(Ordering::Relaxed) >= 2);
    assert_eq!(
        gw.metric(r#"sluice_config_reload_total{result="error"}"#)
            .await,
        refused as f64
    );
    // One sequential client of the real backend, one connection, whatever the reloads did.
    assert_eq!(
        gw.metric(r#"sluice_upstream_connects_total{cluster="real"}"#)
            .await,
        1.0
    );
    assert_eq!(
        gw.metric(r#"sluice_upstream_connects_total{cluster="sse"}"#)
            .await,
        3.0
    );
    eventually("no request is left in flight", || async {
        gw.metric("sluice_requests_in_flight").await == 0.0
    })
    .await;
    gw.stop().await;
}
