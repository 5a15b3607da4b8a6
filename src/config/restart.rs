//! What a reload cannot change: the main file's static sections as written, and which of
//! their keys differ between the file the process started with and a new one.
//!
//! A reload applies the dynamic part and keeps running with the static part it started
//! with; the keys listed here are reported as "needs a restart" so a change is never
//! silently ignored. Each section is destructured field by field, so a new key cannot be
//! added to `file.rs` without deciding here whether it needs a restart.

use super::file::{Listen, Log, MainFile, RateLimit, Redis, Reload, Server};

/// The main file's static sections, as written (before command-line overrides such as
/// `--http`, which a file cannot change anyway).
#[derive(Debug, Clone)]
pub struct StaticSections {
    pub listen: Listen,
    pub server: Server,
    pub log: Log,
    pub reload: Reload,
    /// Where the dynamic files are read from; a new value needs a restart, and until then
    /// reloads read the directory the process started with.
    pub dynamic_dir: Option<String>,
    redis: Option<Redis>,
    ratelimit: RateLimit,
}

impl StaticSections {
    /// The static sections of `main`. Every section of the main file is named here, so a
    /// new one cannot be added without saying whether a reload applies it.
    pub fn of(main: &MainFile) -> StaticSections {
        let MainFile {
            listen,
            server,
            log,
            reload,
            dynamic_dir,
            redis,
            ratelimit,
            // The dynamic part: a reload applies these.
            consumers: _,
            limits: _,
            upstream: _,
            clusters: _,
            routes: _,
            certificates: _,
            tls: _,
        } = main;
        StaticSections {
            listen: listen.clone(),
            server: server.clone(),
            log: log.clone(),
            reload: reload.clone(),
            dynamic_dir: dynamic_dir.clone(),
            redis: redis.clone(),
            ratelimit: ratelimit.clone(),
        }
    }

    /// The keys whose values differ in `new`, in file order: `listen.http`,
    /// `server.max_connections`, `dynamic_dir`...
    pub fn changed(&self, new: &StaticSections) -> Vec<String> {
        let mut keys = Vec::new();
        let mut check = |key: &str, same: bool| {
            if !same {
                keys.push(key.to_owned());
            }
        };
        check("dynamic_dir", self.dynamic_dir == new.dynamic_dir);

        let Listen {
            http,
            https,
            monitor,
        } = &self.listen;
        check("listen.http", *http == new.listen.http);
        check("listen.https", *https == new.listen.https);
        check("listen.monitor", *monitor == new.listen.monitor);

        let Server {
            workers,
            max_connections,
            header_read_timeout,
            send_timeout,
            body_read_timeout,
            max_header_size,
            max_headers,
            max_request_body,
            max_buffered_body,
            http2,
            shutdown_delay,
            drain_timeout,
            trusted_proxies,
        } = &self.server;
        let s = &new.server;
        check("server.workers", *workers == s.workers);
        check(
            "server.max_connections",
            *max_connections == s.max_connections,
        );
        check(
            "server.header_read_timeout",
            *header_read_timeout == s.header_read_timeout,
        );
        check("server.send_timeout", *send_timeout == s.send_timeout);
        check(
            "server.body_read_timeout",
            *body_read_timeout == s.body_read_timeout,
        );
        check(
            "server.max_header_size",
            *max_header_size == s.max_header_size,
        );
        check("server.max_headers", *max_headers == s.max_headers);
        check(
            "server.max_request_body",
            *max_request_body == s.max_request_body,
        );
        check(
            "server.max_buffered_body",
            *max_buffered_body == s.max_buffered_body,
        );
        check("server.http2", *http2 == s.http2);
        check("server.shutdown_delay", *shutdown_delay == s.shutdown_delay);
        check("server.drain_timeout", *drain_timeout == s.drain_timeout);
        check(
            "server.trusted_proxies",
            *trusted_proxies == s.trusted_proxies,
        );

        let Log {
            level,
            format,
            access_log,
        } = &self.log;
        check("log.level", *level == new.log.level);
        check("log.format", *format == new.log.format);
        check("log.access_log", *access_log == new.log.access_log);

        let Reload {
            token,
            watch,
            watch_debounce,
        } = &self.reload;
        check("reload.token", *token == new.reload.token);
        check("reload.watch", *watch == new.reload.watch);
        check(
            "reload.watch_debounce",
            *watch_debounce == new.reload.watch_debounce,
        );
        // The rate-limit store and its Redis are built once, at start.
        check("redis", self.redis == new.redis);
        check("ratelimit", self.ratelimit == new.ratelimit);
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections(toml: &str) -> StaticSections {
        StaticSections::of(&toml::from_str::<MainFile>(toml).unwrap())
    }

    #[test]
    fn equal_files_change_nothing() {
        let a =
            sections("[server]\nmax_connections = 5\n[[clusters]]\nname = \"a\"\nbackends = []\n");
        let b = sections("[server]\nmax_connections = 5\n");
        assert!(a.changed(&b).is_empty());
    }

    #[test]
    fn changed_keys_are_named_in_file_order() {
        let a = sections("");
        let b = sections(
            "dynamic_dir = \"conf.d\"\n[listen]\nhttp = \"127.0.0.1:1\"\n[log]\nlevel = \"debug\"\n\
             [reload]\ntoken = \"t\"\n[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
        );
        assert_eq!(
            a.changed(&b),
            [
                "dynamic_dir",
                "listen.http",
                "server.trusted_proxies",
                "log.level",
                "reload.token"
            ]
        );
    }

    #[test]
    fn a_default_written_out_is_no_change() {
        let a = sections("");
        let b = sections("[listen]\nhttp = \"0.0.0.0:8080\"\n[server]\nhttp2 = true\n");
        assert!(a.changed(&b).is_empty());
    }
}
