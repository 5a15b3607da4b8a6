use super::*;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("http://10.0.0.{i}:8000")).collect()
}

fn owner(ring: &Ring, count: usize, key: u64) -> usize {
    ring.pick(key, count, &|_| true, |_| 0, 1.25).unwrap()
}

#[test]
fn the_hash_is_stable_across_builds() {
    // Fixed values: a change here remaps every key in every running cluster.
    assert_eq!(hash64(b""), hash64(b""));
    assert_ne!(hash64(b"a"), hash64(b"b"));
    assert_ne!(hash64(b"abcdefgh"), hash64(b"abcdefgh\0"));
    assert_eq!(hash64(b"session-42"), 4_659_174_338_421_089_501);
}

#[test]
fn keys_stay_put_and_only_the_removed_backends_keys_move() {
    let all = names(5);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let before = Ring::new(&refs, &[1; 5]);
    // Backend 2 leaves; the others keep their URLs but get new indices.
    let kept: Vec<&str> = refs.iter().copied().filter(|n| *n != refs[2]).collect();
    let after = Ring::new(&kept, &[1; 4]);
    let mut moved = 0;
    let mut on_removed = 0;
    for k in 0..10_000u64 {
        let key = hash64(&k.to_le_bytes());
        let old = refs[owner(&before, 5, key)];
        let new = kept[owner(&after, 4, key)];
        // The same key always lands on the same backend.
        assert_eq!(owner(&before, 5, key), owner(&before, 5, key));
        if old == refs[2] {
            on_removed += 1;
        } else {
            assert_eq!(old, new, "key {k} moved off a backend that stayed");
        }
        if old != new {
            moved += 1;
        }
    }
    assert_eq!(moved, on_removed);
    // About a fifth of the keys were on the removed backend.
    assert!((1_500..2_500).contains(&on_removed), "{on_removed}");
}

#[test]
fn keys_spread_by_weight() {
    let all = names(3);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let ring = Ring::new(&refs, &[1, 1, 2]);
    let mut counts = [0u32; 3];
    for k in 0..40_000u64 {
        counts[owner(&ring, 3, hash64(&k.to_le_bytes()))] += 1;
    }
    // 10,000, 10,000 and 20,000 ideally; virtual nodes keep each within about 15%.
    assert!((8_500..11_500).contains(&counts[0]), "{counts:?}");
    assert!((8_500..11_500).contains(&counts[1]), "{counts:?}");
    assert!((17_000..23_000).contains(&counts[2]), "{counts:?}");
}

#[test]
fn an_unaccepted_or_overloaded_owner_passes_its_keys_clockwise() {
    let all = names(4);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let ring = Ring::new(&refs, &[1; 4]);
    let key = hash64(b"conversation-7");
    let home = owner(&ring, 4, key);
    let next = ring.pick(key, 4, &|i| i != home, |_| 0, 1.25).unwrap();
    assert_ne!(next, home);
    // The same backend takes over every time.
    assert_eq!(ring.pick(key, 4, &|i| i != home, |_| 0, 1.25), Some(next));
    // Home above 1.25 × the mean load: the key spills to the next backend clockwise.
    let load = |i: usize| if i == home { 10 } else { 0 };
    assert_eq!(ring.pick(key, 4, &|_| true, load, 1.25), Some(next));
    // Within the bound it stays home.
    assert_eq!(ring.pick(key, 4, &|_| true, |_| 1, 1.25), Some(home));
    assert_eq!(ring.pick(key, 4, &|_| false, |_| 0, 1.25), None);
}

#[test]
fn keys_come_from_the_configured_source() {
    let mut headers = HeaderMap::new();
    headers.insert("x-session", "abc".parse().unwrap());
    headers.insert("authorization", "Bearer sk-1".parse().unwrap());
    let on = |h: HashOn, prompt: Option<&Bytes>| h.key(&headers, b"10.1.2.3", None, prompt);
    assert_eq!(
        on(HashOn::Header(HeaderName::from_static("x-session")), None),
        Some(hash64(b"abc"))
    );
    assert_eq!(
        on(HashOn::Header(HeaderName::from_static("x-other")), None),
        None
    );
    assert_eq!(on(HashOn::ApiKey, None), Some(hash64(b"Bearer sk-1")));
    assert_eq!(on(HashOn::ClientIp, None), Some(hash64(b"10.1.2.3")));
    // With auth on, the key headers are gone and the consumer stands for the key.
    let consumer = HashOn::ApiKey.key(&HeaderMap::new(), b"", Some("team-a"), None);
    assert_eq!(consumer, Some(hash64(b"team-a")));
    let prompt = Bytes::from_static(b"[{\"role\":\"system\",\"content\":\"long\"}]");
    assert_eq!(
        on(HashOn::Prompt(10), Some(&prompt)),
        Some(hash64(&prompt[..10]))
    );
    assert_eq!(on(HashOn::Prompt(10), None), None);
}
