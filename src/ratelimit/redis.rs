//! Buckets kept in Redis, shared by every replica that points at the same server.
//!
//! One Lua script ([`SCRIPT`]) does the whole decision on the server, atomically: it refills
//! each bucket named by the request's Redis-backed limits from Redis's own clock (`TIME`, so
//! the replicas' clocks do not matter), checks that every one holds its cost, and only then
//! charges them all. A refused request charges none. The script is sent by `EVALSHA`; a
//! server that does not know it (restarted, or `SCRIPT FLUSH`ed) answers `NOSCRIPT`, and the
//! call is repeated once as `EVAL`, which also loads it for the next time.
//!
//! # Connection and failures
//!
//! One [`redis::aio::ConnectionManager`]: a multiplexed connection shared by every request
//! (pipelined, no pool to check out from) that reconnects by itself after the server went
//! away. It connects (and loads the script) in the background at start, so sluice starts
//! while Redis is down, and the first request does not pay for the connection.
//!
//! - Every call is bounded by `redis.timeout`. A slow Redis never holds a request longer.
//! - A call that fails or times out marks Redis down for `redis.retry_interval`. Until then,
//!   calls are not even sent ([`RedisFailure::Skipped`]): the request goes straight to the
//!   limit's failure mode, so a dead Redis costs each request nothing, not one timeout.
//! - After the interval, the next call tries again; the connection manager reconnects, and
//!   the first success marks Redis up.
//!
//! A call that timed out may still have run on the server: its tokens are then charged
//! there although the request was decided locally. This errs toward the limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, ServerErrorKind};
use tokio::time::Instant;

use super::bucket::Rate;
use super::metrics::AccessMetrics;

/// The token-bucket script. KEYS are the buckets; ARGV[1] is `take` (all or nothing) or
/// `adjust` (charge or refund whatever the level); then, per key: capacity, tokens per
/// millisecond, cost. A bucket is a hash `{l = level, t = time in ms}`; a missing one is
/// full. Numbers go back as strings, since Lua numbers in a reply are cut to integers.
pub const SCRIPT: &str = r#"
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + tonumber(now[2]) / 1000
local take = ARGV[1] == 'take'
local levels = {}
local times = {}
for i = 1, #KEYS do
  local cap = tonumber(ARGV[i * 3 - 1])
  local rate = tonumber(ARGV[i * 3])
  local cost = tonumber(ARGV[i * 3 + 1])
  local state = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = tonumber(state[1])
  local at = tonumber(state[2])
  if level == nil or at == nil then
    level = cap
    at = now
  end
  if now > at then
    level = level + (now - at) * rate
    at = now
  end
  if level > cap then level = cap end
  if take and level + 1e-9 < cost then
    return {'0', tostring(i), string.format('%.17g', level),
            string.format('%.17g', (cost - level) / rate)}
  end
  levels[i] = level
  times[i] = at
end
local out = {'1'}
for i = 1, #KEYS do
  local cap = tonumber(ARGV[i * 3 - 1])
  local rate = tonumber(ARGV[i * 3])
  local cost = tonumber(ARGV[i * 3 + 1])
  local level = levels[i] - cost
  if level > cap then level = cap end
  redis.call('HSET', KEYS[i], 'l', string.format('%.17g', level),
             't', string.format('%.17g', times[i]))
  local ttl = math.min(math.ceil((cap - level) / rate) + 1000, 1e12)
  redis.call('PEXPIRE', KEYS[i], string.format('%d', ttl))
  out[i + 1] = string.format('%.17g', level)
end
return out
"#;

/// `[redis]` in runtime form.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Longest a request waits for one Redis call.
    pub timeout: Duration,
    /// Longest one connection attempt may take.
    pub connect_timeout: Duration,
    /// After a failure, Redis is not called for this long.
    pub retry_interval: Duration,
    /// Prepended to every bucket's key.
    pub key_prefix: String,
}

/// One bucket of a call.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub key: &'a [u8],
    pub rate: Rate,
    pub cost: f64,
}

/// What the script decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Every bucket held its cost and was charged; their levels after.
    Taken(Vec<f64>),
    /// Bucket `index` did not hold its cost; nothing was charged.
    Refused {
        index: usize,
        level: f64,
        wait: Duration,
    },
}

/// Why Redis could not decide.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    #[error("no answer from Redis within {0:?}")]
    Timeout(Duration),
    #[error("Redis call failed: {0}")]
    Error(#[from] redis::RedisError),
    #[error("Redis failed less than {0:?} ago; not called")]
    Skipped(Duration),
    #[error("unexpected reply from the rate-limit script: {0}")]
    Reply(String),
}

/// Buckets in Redis.
pub struct RedisBackend {
    conn: ConnectionManager,
    settings: RedisSettings,
    sha: String,
    /// Until when Redis is skipped, in nanoseconds since `epoch`; 0 when up.
    down_until: AtomicU64,
    epoch: Instant,
    metrics: AccessMetrics,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Checks a Redis URL without connecting; the error is a sentence for config errors.
pub fn check_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("`{url}` is not a usable Redis URL: {e}"))
}

impl RedisBackend {
    /// A backend that connects on first use. Must run inside the tokio runtime.
    pub fn new(settings: RedisSettings, metrics: AccessMetrics) -> Result<RedisBackend, String> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| format!("`{}` is not a usable Redis URL: {e}", settings.url))?;
        // One connection attempt per call: the retry interval, not the manager's backoff,
        // paces attempts, and the call's timeout bounds each.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(settings.connect_timeout));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cannot set up the Redis connection: {e}"))?;
        // Connect and load the script now, so the first request does not pay for it. A
        // failure here costs nothing: the first call connects again.
        let mut warm = conn.clone();
        tokio::spawn(async move {
            let loaded: redis::RedisResult<String> = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(SCRIPT)
                .query_async(&mut warm)
                .await;
            if let Err(err) = loaded {
                tracing::info!(error = %err, "rate limits: Redis is not reachable yet");
            }
        });
        Ok(RedisBackend {
            conn,
            sha: redis::Script::new(SCRIPT).get_hash().to_owned(),
            settings,
            down_until: AtomicU64::new(0),
            epoch: Instant::now(),
            metrics,
        })
    }

    /// Takes each item's cost from its bucket if every bucket holds it; charges none
    /// otherwise.
    pub async fn take(&self, items: &[Item<'_>]) -> Result<Answer, RedisFailure> {
        let reply = self.call("take", items).await?;
        parse(&reply, items)
    }

    /// Charges each item's cost (a negative cost refunds), whatever the levels.
    pub async fn adjust(&self, items: &[Item<'_>]) -> Result<(), RedisFailure> {
        self.call("adjust", items).await.map(drop)
    }

    /// Whether Redis is being skipped after a failure.
    pub fn is_down(&self) -> bool {
        let until = self.down_until.load(Ordering::Relaxed);
        until != 0 && self.nanos_now() < until
    }

    fn nanos_now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    async fn call(&self, mode: &str, items: &[Item<'_>]) -> Result<Vec<String>, RedisFailure> {
        if self.is_down() {
            self.metrics.redis_skipped.inc();
            return Err(RedisFailure::Skipped(self.settings.retry_interval));
        }
        let keys: Vec<Vec<u8>> = items
            .iter()
            .map(|item| [self.settings.key_prefix.as_bytes(), item.key].concat())
            .collect();
        let mut args = Vec::with_capacity(1 + 3 * items.len());
        args.push(mode.to_owned());
        for item in items {
            args.push(item.rate.capacity.to_string());
            args.push((item.rate.per_second / 1000.0).to_string());
            args.push(item.cost.to_string());
        }
        let started = Instant::now();
        let result = tokio::time::timeout(self.settings.timeout, self.eval(&keys, &args)).await;
        self.metrics
            .redis_duration
            .observe(started.elapsed().as_secs_f64());
        let failure = match result {
            Ok(Ok(reply)) => {
                self.down_until.store(0, Ordering::Relaxed);
                self.metrics.redis_up.set(1);
                return Ok(reply);
            }
            Ok(Err(err)) => {
                self.metrics.redis_error.inc();
                RedisFailure::Error(err)
            }
            Err(_) => {
                self.metrics.redis_timeout.inc();
                RedisFailure::Timeout(self.settings.timeout)
            }
        };
        self.metrics.redis_up.set(0);
        let until = self.nanos_now().saturating_add(
            u64::try_from(self.settings.retry_interval.as_nanos()).unwrap_or(u64::MAX),
        );
        let was_up = self.down_until.swap(until.max(1), Ordering::Relaxed) == 0;
        if was_up {
            tracing::warn!(error = %failure, "rate limits: Redis failed; limits use their failure mode");
        }
        Err(failure)
    }

    /// `EVALSHA`, or `EVAL` when the server does not know the script.
    async fn eval(&self, keys: &[Vec<u8>], args: &[String]) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.len());
        for key in keys {
            cmd.arg(&key[..]);
        }
        cmd.arg(args);
        match cmd.query_async(&mut conn).await {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(SCRIPT).arg(keys.len());
                for key in keys {
                    cmd.arg(&key[..]);
                }
                cmd.arg(args);
                cmd.query_async(&mut conn).await
            }
            other => other,
        }
    }
}

fn parse(reply: &[String], items: &[Item<'_>]) -> Result<Answer, RedisFailure> {
    let bad = || RedisFailure::Reply(format!("{reply:?}"));
    let number = |text: &String| text.parse::<f64>().map_err(|_| bad());
    match reply.first().map(String::as_str) {
        Some("1") if reply.len() == items.len() + 1 => Ok(Answer::Taken(
            reply[1..].iter().map(number).collect::<Result<_, _>>()?,
        )),
        Some("0") if reply.len() == 4 => {
            let index = reply[1].parse::<usize>().map_err(|_| bad())?;
            if index == 0 || index > items.len() {
                return Err(bad());
            }
            let wait_ms = number(&reply[3])?.max(0.0);
            Ok(Answer::Refused {
                index: index - 1,
                level: number(&reply[2])?,
                wait: Duration::try_from_secs_f64(wait_ms / 1000.0).unwrap_or(Duration::MAX),
            })
        }
        _ => Err(bad()),
    }
}
