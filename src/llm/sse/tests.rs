use super::*;

fn events(chunks: &[&[u8]]) -> Vec<(String, String)> {
    let mut parser = SseParser::new(1024);
    let mut out = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, |e| {
            out.push((
                e.kind.to_owned(),
                String::from_utf8_lossy(e.data).into_owned(),
            ))
        });
    }
    out
}

fn msg(data: &str) -> (String, String) {
    ("message".to_owned(), data.to_owned())
}

#[test]
fn whole_events() {
    assert_eq!(
        events(&[b"data: {\"a\":1}\n\ndata: [DONE]\n\n"]),
        vec![msg("{\"a\":1}"), msg("[DONE]")]
    );
}

#[test]
fn an_event_split_at_every_byte_is_one_event() {
    let stream = b"data: {\"usage\":{\"prompt_tokens\":3}}\r\n\r\ndata: [DONE]\r\n\r\n";
    let chunks: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(
        events(&chunks),
        vec![msg("{\"usage\":{\"prompt_tokens\":3}}"), msg("[DONE]")]
    );
}

#[test]
fn crlf_split_between_reads_ends_one_line() {
    assert_eq!(events(&[b"data: a\r", b"\n\r", b"\n"]), vec![msg("a")]);
}

#[test]
fn lone_cr_ends_lines() {
    assert_eq!(
        events(&[b"data: a\r\rdata: b\r\r"]),
        vec![msg("a"), msg("b")]
    );
}

#[test]
fn multi_line_data_joins_with_newlines() {
    assert_eq!(
        events(&[b"data: first\ndata:second\ndata\n\n"]),
        vec![msg("first\nsecond\n")]
    );
}

#[test]
fn comments_and_other_fields_are_skipped() {
    let mut parser = SseParser::new(1024);
    let mut out = Vec::new();
    parser.feed(
        b": ping\n\nid: 7\nretry: 100\nevent: delta\ndata: x\n\n: ping\n\n",
        |e| out.push((e.kind.to_owned(), e.data.to_vec())),
    );
    assert_eq!(out, vec![("delta".to_owned(), b"x".to_vec())]);
    assert_eq!(parser.comments, 2);
}

#[test]
fn a_leading_bom_is_dropped_even_when_split() {
    assert_eq!(events(&[b"\xEF", b"\xBB\xBFdata: a\n\n"]), vec![msg("a")]);
    assert_eq!(events(&[b"\xEF\xBB\xBFdata: b\n\n"]), vec![msg("b")]);
    // Only at the very start: later, the BOM is part of an unknown field name.
    assert_eq!(
        events(&[b"data: c\n\n\xEF\xBB\xBFdata: d\n\n"]),
        vec![msg("c")]
    );
}

#[test]
fn an_event_without_data_is_not_dispatched() {
    assert_eq!(events(&[b"event: ping\n\n"]), vec![]);
}

#[test]
fn a_line_over_the_bound_stops_inspection_only() {
    let mut parser = SseParser::new(16);
    let mut seen = 0;
    parser.feed(b"data: short\n\n", |_| seen += 1);
    parser.feed(b"data: this line is far longer than sixteen bytes", |_| {
        seen += 1
    });
    parser.feed(b"\n\ndata: later\n\n", |_| seen += 1);
    assert_eq!(seen, 1);
    assert!(parser.overflowed);
}

#[test]
fn trailing_partial_event_waits_for_its_end() {
    let mut parser = SseParser::new(1024);
    let mut seen = Vec::new();
    parser.feed(b"data: par", |e| seen.push(e.data.to_vec()));
    assert!(seen.is_empty());
    parser.feed(b"tial\n", |e| seen.push(e.data.to_vec()));
    assert!(seen.is_empty());
    parser.feed(b"\n", |e| seen.push(e.data.to_vec()));
    assert_eq!(seen, vec![b"partial".to_vec()]);
}

#[test]
fn a_large_event_does_not_leave_its_buffers_behind() {
    let mut parser = SseParser::new(1 << 20);
    let big = format!("data: {}\n\n", "x".repeat(64 << 10));
    // Split so that the long line is gathered in the line buffer too.
    let (head, tail) = big.as_bytes().split_at(1000);
    let mut seen = 0;
    parser.feed(head, |_| seen += 1);
    parser.feed(tail, |e| {
        assert_eq!(e.data.len(), 64 << 10);
        seen += 1;
    });
    assert_eq!(seen, 1);
    assert!(parser.line.capacity() <= KEEP && parser.data.capacity() <= KEEP);
    parser.feed(b"data: small\n\n", |e| assert_eq!(e.data, b"small"));
}
