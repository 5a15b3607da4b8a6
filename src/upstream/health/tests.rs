use super::*;

fn policy() -> OutlierPolicy {
    OutlierPolicy {
        consecutive_failures: 3,
        base_ejection: Duration::from_secs(1),
        max_ejection: Duration::from_secs(5),
    }
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_with_a_growing_backoff() {
    let state = BackendState::new();
    let policy = policy();
    let now = Instant::now;
    assert_eq!(state.failure(&policy, now()), None);
    assert_eq!(state.failure(&policy, now()), None);
    // A success in between starts the count again.
    state.success();
    assert_eq!(state.failure(&policy, now()), None);
    assert_eq!(state.failure(&policy, now()), None);
    assert!(state.is_healthy(now()));
    assert_eq!(state.failure(&policy, now()), Some(Duration::from_secs(1)));
    assert_eq!(
        state.down(now()),
        Some(Down::Ejected(Duration::from_secs(1)))
    );
    // Failures of requests already in flight do not extend it.
    assert_eq!(state.failure(&policy, now()), None);

    tokio::time::advance(Duration::from_millis(1001)).await;
    assert!(state.is_healthy(now()));
    // On probation: the first failure ejects again, for twice as long, then 4s, then the
    // 5s cap.
    for expected in [2, 4, 5, 5] {
        assert_eq!(
            state.failure(&policy, now()),
            Some(Duration::from_secs(expected))
        );
        assert!(!state.is_healthy(now()));
        tokio::time::advance(Duration::from_secs(expected) + Duration::from_millis(1)).await;
        assert!(state.is_healthy(now()));
    }
    // A success clears the backoff: the next ejection needs three failures and is short.
    state.success();
    assert_eq!(state.failure(&policy, now()), None);
    assert_eq!(state.failure(&policy, now()), None);
    assert_eq!(state.failure(&policy, now()), Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn ejection_off_never_ejects() {
    let state = BackendState::new();
    let off = OutlierPolicy {
        consecutive_failures: 0,
        ..policy()
    };
    for _ in 0..100 {
        assert_eq!(state.failure(&off, Instant::now()), None);
    }
    assert!(state.is_healthy(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn retry_after_pauses_up_to_the_cap() {
    let state = BackendState::new();
    state.pause(
        Duration::from_secs(2),
        Duration::from_secs(5),
        Instant::now(),
    );
    assert_eq!(
        state.down(Instant::now()),
        Some(Down::Paused(Duration::from_secs(2)))
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(state.is_healthy(Instant::now()));
    state.pause(
        Duration::from_secs(3600),
        Duration::from_secs(5),
        Instant::now(),
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(state.is_healthy(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn active_checks_need_their_thresholds_and_start_slow_start() {
    let state = BackendState::new();
    let policy = CheckPolicy {
        healthy_threshold: 2,
        unhealthy_threshold: 3,
    };
    let now = Instant::now;
    assert_eq!(state.slow_start(Duration::from_secs(10), now()), 1.0);
    assert_eq!(state.check(false, &policy, now()), None);
    assert_eq!(state.check(false, &policy, now()), None);
    assert_eq!(state.check(true, &policy, now()), None);
    assert_eq!(state.check(false, &policy, now()), None);
    assert_eq!(state.check(false, &policy, now()), None);
    assert_eq!(state.check(false, &policy, now()), Some(false));
    assert_eq!(state.down(now()), Some(Down::Check));
    assert_eq!(state.check(true, &policy, now()), None);
    assert_eq!(state.check(true, &policy, now()), Some(true));
    assert!(state.is_healthy(now()));
    // Back up: its share ramps from 10% to all of it over the window.
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(state.slow_start(Duration::from_secs(10), now()), 0.1);
    tokio::time::advance(Duration::from_secs(5)).await;
    let half = state.slow_start(Duration::from_secs(10), now());
    assert!((0.49..0.51).contains(&half), "{half}");
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(state.slow_start(Duration::from_secs(10), now()), 1.0);
}

#[tokio::test(start_paused = true)]
async fn the_cap_queues_then_refuses() {
    let state = Arc::new(BackendState::new());
    let first = state.try_begin(1).expect("a free slot");
    assert!(state.try_begin(1).is_none());
    let deadline = Instant::now() + Duration::from_secs(1);

    // One waiter fits in the queue; a second is refused at once.
    let waiter = {
        let state = Arc::clone(&state);
        tokio::spawn(async move { state.begin_queued(1, 1, deadline).await.map(|_| ()) })
    };
    tokio::task::yield_now().await;
    assert_eq!(state.queued(), 1);
    assert_eq!(
        state.begin_queued(1, 1, deadline).await.err(),
        Some(Refused::QueueFull)
    );
    // Freeing the slot lets the waiter in.
    drop(first);
    assert_eq!(waiter.await.unwrap(), Ok(()));
    assert_eq!(state.queued(), 0);
    assert_eq!(state.in_flight(), 0);

    // A waiter whose deadline passes gives up.
    let _held = state.try_begin(1).unwrap();
    let deadline = Instant::now() + Duration::from_millis(100);
    assert_eq!(
        state.begin_queued(1, 1, deadline).await.err(),
        Some(Refused::Timeout)
    );
    assert_eq!(state.queued(), 0);
}
