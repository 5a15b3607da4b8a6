use super::*;
use http_body::Body as _;
use std::task::Waker;
use std::time::Instant;

const CHAT: &str = "/v1/chat/completions";
const CMPL: &str = "/v1/completions";
const EMB: &str = "/v1/embeddings";

fn mock(uri: &str) -> MockBackend {
    MockBackend::from_uri(&uri.parse().unwrap()).unwrap()
}

fn parse_err(uri: &str) -> String {
    MockBackend::from_uri(&uri.parse().unwrap()).unwrap_err()
}

fn request(path: &str, body: &str, headers: &[(&'static str, &'static str)]) -> Request<Body> {
    let method = if body.is_empty() { "GET" } else { "POST" };
    let mut req = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(body::full(body.to_string())).unwrap()
}

async fn post(m: &MockBackend, path: &str, body: &str) -> Response<Body> {
    m.handle(request(path, body, &[])).await
}

async fn json_of(response: Response<Body>) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// The JSON of every event of a streamed answer, checking that each frame is one whole
/// `data: ...\n\n` event and that the last is `data: [DONE]`.
async fn stream_events(response: Response<Body>) -> Vec<Value> {
    assert_eq!(response.headers()[CONTENT_TYPE], "text/event-stream");
    assert_eq!(response.headers()[CACHE_CONTROL], "no-cache");
    let mut body = response.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        frames.push(String::from_utf8(frame.unwrap().into_data().unwrap().to_vec()).unwrap());
    }
    assert_eq!(frames.pop().as_deref(), Some("data: [DONE]\n\n"));
    let payload = |frame: &String| {
        let json = frame
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        assert!(!json.contains('\n'), "one event per frame: {frame:?}");
        serde_json::from_str(json).unwrap()
    };
    frames.iter().map(payload).collect()
}

fn poll_once(body: &mut Body) -> Poll<Option<Result<Frame<Bytes>, body::BoxError>>> {
    Pin::new(body).poll_frame(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn parses_good_uris() {
    let m = mock("mock://local");
    assert_eq!((m.name(), m.tokens, m.delay), ("local", 16, Duration::ZERO));
    let m = mock("mock://fast?tokens=3&delay=20ms");
    let fast = ("fast", 3, Duration::from_millis(20));
    assert_eq!((m.name(), m.tokens, m.delay), fast);
    assert_eq!(mock("mock://x/?delay=1s").delay, Duration::from_secs(1));
}

#[test]
fn rejects_bad_uris() {
    let unknown = "unknown parameter `foo`; expected `tokens` or `delay`";
    assert_eq!(parse_err("mock://m?foo=1"), unknown);
    let tokens = "`tokens` must be a whole number from 1 to 100000";
    for bad in ["0", "100001", "-3", "many"] {
        assert_eq!(parse_err(&format!("mock://m?tokens={bad}")), tokens);
    }
    assert!(parse_err("mock://m?delay=soon").starts_with("`delay`: invalid duration `soon`"));
    assert!(parse_err("mock://m?delay=2h").contains("at most 1h"));
    assert!(parse_err("mock://m?tokens").contains("needs a value"));
    assert!(parse_err("http://m").contains("not a mock URI"));
    assert!(parse_err("mock://m:80").contains("user or port"));
    assert!(parse_err("mock://m/v1").contains("no path"));
}

#[tokio::test]
async fn chat_completion_with_usage() {
    let m = mock("mock://local?tokens=5");
    let req = r#"{"model":"gpt-x","messages":[{"role":"user","content":"hello there world"},
        {"role":"user","content":[{"type":"text","text":"and more"}]}]}"#;
    let response = post(&m, CHAT, req).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-sluice-mock"], "local");
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let v = json_of(response).await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-x");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-mock-"));
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    let message = json!({ "role": "assistant", "content": "lorem ipsum dolor sit amet " });
    assert_eq!(v["choices"][0]["message"], message);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let usage = json!({ "prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10 });
    assert_eq!(v["usage"], usage);
}

#[tokio::test]
async fn max_tokens_cuts_with_finish_reason_length() {
    let m = mock("mock://local?tokens=10");
    let v = json_of(post(&m, CHAT, r#"{"model":"m","max_tokens":3}"#).await).await;
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["prompt_tokens"], 1);
    let req = r#"{"model":"m","max_completion_tokens":50}"#;
    let v = json_of(post(&m, CHAT, req).await).await;
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 10);
}

#[tokio::test]
async fn streamed_chat_without_usage() {
    let m = mock("mock://s?tokens=3");
    let req = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let response = post(&m, CHAT, req).await;
    assert_eq!(response.headers()["x-sluice-mock"], "s");
    let events = stream_events(response).await;
    assert_eq!(events.len(), 5, "role, 3 tokens, finish");
    let delta = |i: usize| events[i]["choices"][0]["delta"].clone();
    assert_eq!(delta(0), json!({ "role": "assistant", "content": "" }));
    let text: Vec<Value> = (1..4).map(|i| delta(i)["content"].clone()).collect();
    assert_eq!(text, ["lorem ", "ipsum ", "dolor "]);
    assert_eq!(delta(4), json!({}));
    assert_eq!(events[4]["choices"][0]["finish_reason"], "stop");
    let unfinished = |e: &Value| e["choices"][0]["finish_reason"].is_null();
    assert!(events[..4].iter().all(unfinished));
    for event in &events {
        assert_eq!(event["object"], "chat.completion.chunk");
        assert_eq!(event["id"], events[0]["id"]);
        assert!(event.get("usage").is_none());
    }
}

#[tokio::test]
async fn streamed_chat_with_usage_and_max_tokens() {
    let m = mock("mock://s?tokens=8");
    let req = r#"{"model":"m","messages":[{"role":"user","content":"a b c"}],"max_tokens":2,
        "stream":true,"stream_options":{"include_usage":true}}"#;
    let events = stream_events(post(&m, CHAT, req).await).await;
    assert_eq!(events.len(), 5, "role, 2 tokens, finish, usage");
    assert_eq!(events[3]["choices"][0]["finish_reason"], "length");
    let usage_null = |e: &Value| e.get("usage") == Some(&Value::Null);
    assert!(events[..4].iter().all(usage_null));
    assert_eq!(events[4]["choices"], json!([]));
    let usage = json!({ "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5 });
    assert_eq!(events[4]["usage"], usage);
}

#[tokio::test]
async fn delays_hold_back_tokens() {
    // The role chunk comes at once; the first token waits for the delay.
    let headers = [("x-mock-delay", "1h")];
    let req = request(CHAT, r#"{"model":"m","stream":true}"#, &headers);
    let mut body = mock("mock://s").handle(req).await.into_body();
    assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Ok(_)))));
    assert!(poll_once(&mut body).is_pending());
    // Streamed and not, `n` tokens take at least `n * delay`.
    let m = mock("mock://s?tokens=3&delay=10ms");
    for req in [r#"{"model":"m","stream":true}"#, r#"{"model":"m"}"#] {
        let start = Instant::now();
        let response = post(&m, CHAT, req).await;
        response.into_body().collect().await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30), "{req}");
    }
}

#[tokio::test]
async fn completions_plain_and_streamed() {
    let m = mock("mock://c?tokens=2");
    let req = r#"{"model":"m","prompt":["one two","three"]}"#;
    let v = json_of(post(&m, CMPL, req).await).await;
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-mock-"));
    assert_eq!(v["choices"][0]["text"], "lorem ipsum ");
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    let req = r#"{"model":"m","prompt":"x","stream":true}"#;
    let events = stream_events(post(&m, CMPL, req).await).await;
    let texts: Vec<&Value> = events.iter().map(|e| &e["choices"][0]["text"]).collect();
    assert_eq!(texts, ["lorem ", "ipsum ", ""]);
    assert_eq!(events[2]["choices"][0]["finish_reason"], "stop");
    let req = r#"{"model":"m","prompt":"x","stream":true,"max_tokens":0}"#;
    let events = stream_events(post(&m, CMPL, req).await).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn bad_input_is_a_json_400() {
    let m = mock("mock://local");
    for (path, body, code) in [
        (CHAT, "not json", "invalid_json"),
        (CHAT, r#"{"messages":[]}"#, "missing_model"),
        (CHAT, r#"{"model":"m","stream":"yes"}"#, "invalid_request"),
        (CHAT, r#"{"model":"m","max_tokens":-1}"#, "invalid_request"),
        (CMPL, r#"{"model":"m","prompt":7}"#, "invalid_request"),
        (EMB, r#"{"input":"x"}"#, "missing_model"),
        (EMB, r#"{"model":"e"}"#, "invalid_request"),
        (EMB, r#"{"model":"e","input":[]}"#, "invalid_request"),
        (EMB, r#"{"model":"e","input":[1]}"#, "invalid_request"),
    ] {
        let response = post(&m, path, body).await;
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()["x-sluice-mock"], "local");
        let error = json_of(response).await["error"].take();
        assert_eq!(error["type"], "invalid_request_error");
        assert_eq!(error["code"], code, "{body}");
        assert!(error["message"].is_string());
    }
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_405() {
    let m = mock("mock://local");
    let response = post(&m, "/v2/nothing", "{}").await;
    assert_eq!(response.status(), 404);
    assert_eq!(json_of(response).await["error"]["code"], "unknown_url");
    let response = m.handle(request(CHAT, "", &[])).await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()[ALLOW], "POST");
}

#[tokio::test]
async fn lists_the_backend_as_its_model() {
    let response = mock("mock://llama")
        .handle(request("/v1/models", "", &[]))
        .await;
    let v = json_of(response).await;
    let model =
        json!({ "id": "llama", "object": "model", "created": 0, "owned_by": "sluice-mock" });
    assert_eq!(v, json!({ "object": "list", "data": [model] }));
}

#[tokio::test]
async fn embeddings_are_deterministic_unit_vectors() {
    let m = mock("mock://e");
    let req = r#"{"model":"emb","input":["hello world","other","hello world"]}"#;
    let v = json_of(post(&m, EMB, req).await).await;
    assert_eq!((&v["object"], &v["model"]), (&json!("list"), &json!("emb")));
    assert_eq!(v["usage"], json!({ "prompt_tokens": 5, "total_tokens": 5 }));
    let data = v["data"].as_array().unwrap();
    assert_eq!((data.len(), &data[1]["index"]), (3, &json!(1)));
    let vector: Vec<f64> = serde_json::from_value(data[0]["embedding"].clone()).unwrap();
    assert_eq!(vector.len(), 8);
    assert!((vector.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-4);
    assert_eq!(data[0]["embedding"], data[2]["embedding"]);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    let single = r#"{"model":"emb","input":"hello world"}"#;
    let v = json_of(post(&m, EMB, single).await).await;
    assert_eq!(v["data"][0]["embedding"], data[0]["embedding"]);
}

#[tokio::test]
async fn headers_override_status_tokens_and_delay() {
    let m = mock("mock://local?tokens=4&delay=1h");
    fn chat(headers: &[(&'static str, &'static str)]) -> Request<Body> {
        request(CHAT, r#"{"model":"m"}"#, headers)
    }
    let response = m.handle(chat(&[("x-mock-status", "503")])).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-sluice-mock"], "local");
    assert_eq!(json_of(response).await["error"]["type"], "server_error");
    let response = m.handle(chat(&[("x-mock-status", "429")])).await;
    assert_eq!(response.status(), 429);
    let headers = [("x-mock-tokens", "2"), ("x-mock-delay", "0s")];
    let v = json_of(m.handle(chat(&headers)).await).await;
    assert_eq!(v["usage"]["completion_tokens"], 2);
    let bad = [
        ("x-mock-status", "200"),
        ("x-mock-tokens", "0"),
        ("x-mock-delay", "x"),
    ];
    for header in bad {
        assert_eq!(m.handle(chat(&[header])).await.status(), 400, "{header:?}");
    }
}

#[test]
fn handle_is_send() {
    fn assert_send<T: Send>(_: T) {}
    let m = mock("mock://local");
    assert_send(m.handle(request("/v1/models", "", &[])));
}
