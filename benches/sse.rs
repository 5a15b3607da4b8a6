//! How fast sluice reads a streamed answer on the side while forwarding it.
//!
//! The input is 1 MiB of an OpenAI-style chat stream: `data: {chat.completion.chunk}`
//! events of about 200 bytes, each carrying one token of text, then a usage chunk and
//! `data: [DONE]`.
//!
//! - `sse/parse/<chunking>`: `SseParser::feed` alone (lines, fields, events), fed one event
//!   per chunk (`per_event`, as a model server flushes them) or in 16 KiB chunks (`16KiB`,
//!   as a busy connection delivers them, events split across chunks).
//! - `sse/tap/per_event`: `LlmTap::observe`, what the request path runs on every forwarded
//!   chunk: the parser plus the JSON read of each event (output seen, finish reason, usage).
//!
//! Run: `cargo bench --bench sse`; figures are in `docs/benchmarks.md`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice::llm::sse::SseParser;
use sluice::llm::tap::LlmTap;

const STREAM_BYTES: usize = 1024 * 1024;

/// About 1 MiB of chat-completion chunks, one `Bytes` per event.
fn events() -> Vec<Bytes> {
    let mut events = Vec::new();
    let mut total = 0;
    let mut i = 0;
    while total < STREAM_BYTES {
        let event = format!(
            "data: {{\"id\":\"chatcmpl-7\",\"object\":\"chat.completion.chunk\",\"created\":1732000000,\
             \"model\":\"llama-3.1-70b-instruct\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" token{i}\"}},\
             \"finish_reason\":null}}]}}\n\n"
        );
        total += event.len();
        events.push(Bytes::from(event));
        i += 1;
    }
    events.push(Bytes::from_static(
        b"data: {\"id\":\"chatcmpl-7\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":4000,\"total_tokens\":4020}}\n\n",
    ));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// The same stream cut into chunks of `size` bytes, regardless of event boundaries.
fn rechunk(events: &[Bytes], size: usize) -> Vec<Bytes> {
    let whole: Vec<u8> = events.iter().flat_map(|e| e.iter().copied()).collect();
    whole.chunks(size).map(Bytes::copy_from_slice).collect()
}

fn count_events(chunks: &[Bytes]) -> usize {
    let mut parser = SseParser::new(64 * 1024);
    let mut n = 0;
    for chunk in chunks {
        parser.feed(chunk, |_| n += 1);
    }
    n
}

fn sse(c: &mut Criterion) {
    let per_event = events();
    let bytes: usize = per_event.iter().map(Bytes::len).sum();
    let large = rechunk(&per_event, 16 * 1024);
    // Both chunkings must yield every event, or the figures measure nothing.
    assert_eq!(count_events(&per_event), per_event.len());
    assert_eq!(count_events(&large), per_event.len());

    let mut group = c.benchmark_group("sse");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(bytes as u64));
    for (label, chunks) in [("per_event", &per_event), ("16KiB", &large)] {
        group.bench_with_input(BenchmarkId::new("parse", label), chunks, |b, chunks| {
            b.iter(|| {
                let mut parser = SseParser::new(64 * 1024);
                let mut n = 0usize;
                for chunk in chunks {
                    parser.feed(black_box(chunk), |event| n += event.data.len());
                }
                black_box(n)
            })
        });
    }

    let mut tap = LlmTap::new(Some(b"text/event-stream"));
    for chunk in &per_event {
        tap.observe(chunk);
    }
    tap.finish();
    assert_eq!(tap.usage.map(|u| u.output), Some(Some(4000)));
    group.bench_with_input(
        BenchmarkId::new("tap", "per_event"),
        &per_event,
        |b, chunks| {
            b.iter(|| {
                let mut tap = LlmTap::new(Some(b"text/event-stream"));
                for chunk in chunks {
                    tap.observe(black_box(chunk));
                }
                tap.finish();
                black_box(tap.usage)
            })
        },
    );
    group.finish();
}

criterion_group!(benches, sse);
criterion_main!(benches);
