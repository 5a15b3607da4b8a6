use serde::de::IgnoredAny;

use super::*;

/// Whether the scanner takes `text` as one whole JSON value.
fn accepts(text: &[u8]) -> bool {
    let mut scan = Scanner::new(text);
    scan.value().is_ok() && scan.at_end()
}

fn serde_accepts(text: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(text).is_ok()
}

#[test]
fn agrees_with_serde_json_on_hand_picked_texts() {
    let texts: &[&[u8]] = &[
        b"{}",
        b" { } ",
        b"[]",
        b"[1,2,3]",
        b"[1,2,]",
        b"[,1]",
        b"{\"a\":1,}",
        b"{,}",
        b"{\"a\" 1}",
        b"{\"a\":}",
        b"{1:2}",
        b"{\"a\":1 \"b\":2}",
        b"\"plain\"",
        b"\"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uD83D\"",
        b"\"bad \\x\"",
        b"\"short \\u12\"",
        b"\"hex \\u12G4\"",
        b"\"raw \x01 control\"",
        b"\"tab \t inside\"",
        b"\"unterminated",
        b"0",
        b"-0",
        b"01",
        b"-",
        b"1.",
        b"1.5",
        b".5",
        b"1e",
        b"1e+",
        b"1E-7",
        b"1.5e3",
        b"-12.0e+10",
        b"+1",
        b"true",
        b"tru",
        b"truex",
        b"false",
        b"null",
        b"nul",
        b"NaN",
        b"",
        b"   ",
        b"{} {}",
        b"[1] x",
        b"{\"a\":[{\"b\":[null,true,false,\"x\",-1.5e-3]}],\"c\":{}}",
        b"\xef\xbb\xbf{}",
        b"{\"\xc3\xa9\":1}",
        b"[\"\xc3\xa9\"]",
    ];
    for text in texts {
        assert_eq!(
            accepts(text),
            serde_accepts(text),
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }
}

#[test]
fn agrees_with_serde_json_on_mutated_request_bodies() {
    let seeds: &[&[u8]] = &[
        br#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Say \"hi\"\n"}],"max_tokens":16,"temperature":0.7,"stream":true,"stream_options":{"include_usage":true}}"#,
        br#"{"model":"m","prompt":["a","b"],"logit_bias":{"50256":-100},"n":1,"stop":null,"seed":-12,"top_p":1e-3}"#,
        br#"[{"a":[1,[2,[3,{"b":{}}]]]},true,false,null,"\u00e9\ud83d\ude00"]"#,
    ];
    // Bytes that make or break JSON, ASCII only: inside a string serde_json checks UTF-8
    // only where it keeps the text, and so does the scanner's caller.
    let alphabet = b"{}[],:\"\\ \t\n0123456789-+.eEtrufalsn/bu\x01x";
    let mut next = test_numbers(0x2545_f491_4f6c_dd1d);
    let mut both = [0usize; 2];
    for round in 0..20_000 {
        let mut text = seeds[round % seeds.len()].to_vec();
        for _ in 0..1 + next(3) {
            let at = next(text.len() + 1);
            let byte = alphabet[next(alphabet.len())];
            match next(3) {
                0 if at < text.len() => text[at] = byte,
                1 if at < text.len() => {
                    text.remove(at);
                }
                _ => text.insert(at, byte),
            }
        }
        let ours = accepts(&text);
        assert_eq!(
            ours,
            serde_accepts(&text),
            "{:?}",
            String::from_utf8_lossy(&text)
        );
        both[usize::from(ours)] += 1;
    }
    // The mutations reach both answers often, or the comparison says little.
    assert!(both[0] > 2_000 && both[1] > 2_000, "{both:?}");
}

#[test]
fn nesting_is_bounded_without_exhausting_the_stack() {
    let nested = |depth: usize| [vec![b'['; depth], vec![b']'; depth]].concat();
    assert!(accepts(&nested(MAX_DEPTH)));
    assert!(!accepts(&nested(MAX_DEPTH + 1)));
    assert!(!accepts(&nested(100_000)));
}

#[test]
fn members_come_with_their_names_and_spans() {
    let text = br#" { "a" : [1, 2] , "b\"c":"x" } "#;
    let mut scan = Scanner::new(text);
    scan.open_object().unwrap();
    let (name, escaped) = scan.next_member(true).unwrap().unwrap();
    assert_eq!((&text[name], escaped), (&b"a"[..], false));
    let (kind, span) = scan.value().unwrap();
    assert_eq!((kind, &text[span]), (Kind::Array, &b"[1, 2]"[..]));
    let (name, escaped) = scan.next_member(false).unwrap().unwrap();
    assert_eq!((&text[name], escaped), (&br#"b\"c"#[..], true));
    let (kind, span) = scan.value().unwrap();
    assert_eq!((kind, &text[span]), (Kind::String, &br#""x""#[..]));
    assert_eq!(scan.next_member(false), Ok(None));
    assert!(scan.at_end());
}

#[test]
fn whole_numbers_read_as_u64_as_serde_json_reads_them() {
    assert_eq!(as_u64(b"0"), Some(0));
    assert_eq!(as_u64(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(as_u64(b"18446744073709551616"), None);
    for text in [&b"-1"[..], b"1.0", b"1e3", b"-0", b""] {
        assert_eq!(as_u64(text), None, "{text:?}");
    }
}

#[test]
fn plain_runs_end_where_a_byte_by_byte_scan_ends() {
    let naive = |bytes: &[u8]| {
        let stop = bytes
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        stop.unwrap_or(bytes.len())
    };
    let mut next = test_numbers(0x9e37_79b9_7f4a_7c15);
    for len in 0..40 {
        for _ in 0..200 {
            // Mostly plain bytes, high ones included, and now and then a stop byte.
            let text: Vec<u8> = (0..len)
                .map(|_| match next(16) {
                    0 => b"\"\\\x00\x1f"[next(4)],
                    _ => 0x20 + next(0xe0) as u8,
                })
                .collect();
            assert_eq!(plain_run(&text), naive(&text), "{text:?}");
        }
    }
}
