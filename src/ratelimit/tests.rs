//! Decisions over several limits, with paused time and the local store.

use std::net::IpAddr;

use super::key::KeyPart;
use super::*;

fn limiter() -> Arc<Limiter> {
    let metrics = AccessMetrics::register(&prometheus::Registry::new()).unwrap();
    Arc::new(Limiter::new(&StoreSettings::default(), None, metrics).unwrap())
}

fn limit(name: &str, kind: Kind, key: Vec<KeyPart>) -> Arc<Limit> {
    let metrics = AccessMetrics::register(&prometheus::Registry::new()).unwrap();
    Arc::new(Limit {
        name: name.to_owned(),
        kind,
        key,
        backend: Backend::Local,
        decisions: metrics.decisions(name),
    })
}

fn per_minute(n: u64) -> Rate {
    Rate::new(n, Duration::from_secs(60), n).unwrap()
}

fn tokens_per_hour(n: u64) -> Kind {
    Kind::Tokens(
        Rate::new(n, Duration::from_secs(3600), n).unwrap(),
        Estimate {
            bytes_per_token: 4.0,
            default_max_tokens: 100,
        },
    )
}

fn ask<'a>(consumer: &'a str, headers: &'a HeaderMap) -> Ask<'a> {
    Ask {
        values: KeyValues {
            consumer: Some(consumer),
            route: "chat",
            model: Some("m"),
            client: IpAddr::from([127, 0, 0, 1]),
            headers,
        },
        body_len: 400,
        max_output: Some(100),
        upgrade: false,
    }
}

fn level(limiter: &Limiter, limit: &Limit, ask: &Ask<'_>) -> f64 {
    let key = key::build(&limit.name, &limit.key, &ask.values);
    limiter
        .local()
        .level(&key)
        .unwrap_or_else(|| limit.rate().unwrap().capacity)
}

#[tokio::test(start_paused = true)]
async fn a_refusal_by_a_later_limit_takes_nothing_from_earlier_ones() {
    let limiter = limiter();
    let per_consumer = limit(
        "per-consumer",
        Kind::Requests(per_minute(10)),
        vec![KeyPart::Consumer],
    );
    let global = limit("global", Kind::Requests(per_minute(1)), vec![]);
    let headers = HeaderMap::new();
    let a = ask("a", &headers);
    let limits = [&per_consumer, &global];

    assert!(limiter.admit(&limits, &a).await.outcome.is_ok());
    assert_eq!(level(&limiter, &per_consumer, &a), 9.0);
    let refused = limiter.admit(&limits, &a).await;
    assert_eq!(
        refused.outcome.unwrap_err(),
        Refusal::Limited {
            limit: "global".into(),
            kind: "requests",
            retry_after: Duration::from_secs(60),
        }
    );
    assert_eq!(
        level(&limiter, &per_consumer, &a),
        9.0,
        "the earlier limit's token was given back"
    );
    assert_eq!(per_consumer.decisions.allowed.get(), 1);
    assert_eq!(global.decisions.limited.get(), 1);
    assert_eq!(per_consumer.decisions.limited.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn in_flight_caps_release_when_the_admission_ends() {
    let limiter = limiter();
    let streams = limit("streams", Kind::Concurrent(1), vec![KeyPart::Consumer]);
    let rpm = limit(
        "rpm",
        Kind::Requests(per_minute(100)),
        vec![KeyPart::Consumer],
    );
    let headers = HeaderMap::new();
    let a = ask("a", &headers);
    let limits = [&streams, &rpm];

    let first = limiter.admit(&limits, &a).await.outcome.unwrap();
    let second = limiter.admit(&limits, &a).await;
    assert!(matches!(
        second.outcome,
        Err(Refusal::Limited {
            kind: "concurrency",
            ..
        })
    ));
    // Another consumer has its own cap.
    let b = ask("b", &headers);
    assert!(limiter.admit(&limits, &b).await.outcome.is_ok());
    drop(first);
    assert!(limiter.admit(&limits, &a).await.outcome.is_ok());
    // A refusal by a later limit frees the slot it took.
    let tight = limit("tight", Kind::Requests(per_minute(1)), vec![]);
    let limits = [&streams, &tight];
    let _ok = limiter
        .admit(&limits, &ask("c", &headers))
        .await
        .outcome
        .unwrap();
    assert!(limiter
        .admit(&limits, &ask("d", &headers))
        .await
        .outcome
        .is_err());
    let key = key::build("streams", &streams.key, &ask("d", &headers).values);
    assert_eq!(limiter.local().in_flight(&key), 0);
}

#[tokio::test(start_paused = true)]
async fn token_reservations_settle_to_the_usage() {
    let limiter = limiter();
    let tpm = limit("tpm", tokens_per_hour(1000), vec![KeyPart::Consumer]);
    let headers = HeaderMap::new();
    let a = ask("a", &headers);
    let limits = [&tpm];

    // 400 bytes / 4 + max_tokens 100 = 200 reserved.
    let decision = limiter.admit(&limits, &a).await;
    assert_eq!(decision.headers.tokens().unwrap().remaining, 800);
    decision.outcome.unwrap().settle(Some(50), true);
    assert_eq!(level(&limiter, &tpm, &a), 950.0);

    // An upstream answer without usage keeps the estimate.
    let admission = limiter.admit(&limits, &a).await.outcome.unwrap();
    admission.settle(None, true);
    assert_eq!(level(&limiter, &tpm, &a), 750.0);

    // An answer sluice gave itself (an error) costs nothing.
    let admission = limiter.admit(&limits, &a).await.outcome.unwrap();
    admission.settle(None, false);
    assert_eq!(level(&limiter, &tpm, &a), 750.0);

    // More used than reserved goes into debt.
    let admission = limiter.admit(&limits, &a).await.outcome.unwrap();
    admission.settle(Some(1750), true);
    assert_eq!(level(&limiter, &tpm, &a), -1000.0);
    let refused = limiter.admit(&limits, &a).await;
    let Err(Refusal::Limited {
        retry_after, kind, ..
    }) = refused.outcome
    else {
        panic!("admitted in debt");
    };
    assert_eq!(kind, "tokens");
    // 1,200 tokens at 1,000 per hour.
    assert_eq!(retry_after, Duration::from_secs(4320));
}

#[tokio::test(start_paused = true)]
async fn an_estimate_above_capacity_waits_for_a_full_bucket() {
    let limiter = limiter();
    let tpm = limit("tpm", tokens_per_hour(100), vec![]);
    let headers = HeaderMap::new();
    let a = ask("a", &headers);
    let admission = limiter.admit(&[&tpm], &a).await.outcome.unwrap();
    assert_eq!(level(&limiter, &tpm, &a), 0.0);
    admission.settle(Some(20), true);
    assert_eq!(level(&limiter, &tpm, &a), 80.0);
    assert!(limiter.admit(&[&tpm], &a).await.outcome.is_err());
    tokio::time::advance(Duration::from_secs(720)).await;
    assert!(limiter.admit(&[&tpm], &a).await.outcome.is_ok());
}

#[tokio::test(start_paused = true)]
async fn headers_show_the_tightest_limit_of_each_kind() {
    let limiter = limiter();
    let loose = limit("loose", Kind::Requests(per_minute(100)), vec![]);
    let tight = limit("tight", Kind::Requests(per_minute(10)), vec![]);
    let tpm = limit("tpm", tokens_per_hour(1000), vec![]);
    let headers = HeaderMap::new();
    let decision = limiter
        .admit(&[&loose, &tight, &tpm], &ask("a", &headers))
        .await;
    let mut out = HeaderMap::new();
    decision.headers.apply(&mut out);
    let get = |name: &str| out.get(name).unwrap().to_str().unwrap().to_owned();
    assert_eq!(get("x-ratelimit-limit-requests"), "10");
    assert_eq!(get("x-ratelimit-remaining-requests"), "9");
    assert_eq!(get("x-ratelimit-reset-requests"), "6s");
    assert_eq!(get("x-ratelimit-limit-tokens"), "1000");
    assert_eq!(get("x-ratelimit-remaining-tokens"), "800");
    assert_eq!(get("x-ratelimit-reset-tokens"), "12m0s");
}

#[tokio::test(start_paused = true)]
async fn websocket_handshakes_meet_request_limits_only() {
    let limiter = limiter();
    let rpm = limit("rpm", Kind::Requests(per_minute(1)), vec![]);
    let tpm = limit("tpm", tokens_per_hour(1), vec![]);
    let streams = limit("streams", Kind::Concurrent(1), vec![]);
    let headers = HeaderMap::new();
    let mut upgrade = ask("a", &headers);
    upgrade.upgrade = true;
    let limits = [&streams, &rpm, &tpm];
    let first = limiter.admit(&limits, &upgrade).await;
    assert!(first.outcome.is_ok());
    assert!(first.headers.tokens().is_none());
    assert_eq!(tpm.decisions.allowed.get(), 0);
    assert!(limiter.admit(&limits, &upgrade).await.outcome.is_err());
}

#[tokio::test(start_paused = true)]
async fn the_allowed_rate_through_the_limiter_matches_the_configured_rate() {
    // 120 per minute with a burst of 120, offered 10 per second for 10 minutes.
    let limiter = limiter();
    let rpm = limit(
        "rpm",
        Kind::Requests(per_minute(120)),
        vec![KeyPart::Consumer],
    );
    let headers = HeaderMap::new();
    let a = ask("a", &headers);
    let mut allowed = 0;
    for _ in 0..6000 {
        if limiter.admit(&[&rpm], &a).await.outcome.is_ok() {
            allowed += 1;
        }
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    // The burst, then 2 per second for 600 s (the last refill is 100 ms short).
    assert!((1319..=1320).contains(&allowed), "{allowed}");
    assert_eq!(rpm.decisions.allowed.get(), allowed);
}

#[test]
fn resets_are_written_as_openai_writes_them() {
    let ms = Duration::from_millis;
    assert_eq!(format_reset(Duration::ZERO), "0s");
    assert_eq!(format_reset(Duration::from_micros(10)), "1ms");
    assert_eq!(format_reset(ms(250)), "250ms");
    assert_eq!(format_reset(ms(1000)), "1s");
    assert_eq!(format_reset(ms(1500)), "1.5s");
    assert_eq!(format_reset(ms(360_000)), "6m0s");
    assert_eq!(format_reset(ms(3_723_000)), "1h2m3s");
    assert_eq!(format_reset(ms(61_250)), "1m1.25s");
}
