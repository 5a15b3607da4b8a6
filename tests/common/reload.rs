//! The steps of a conf-agent and of kubelet, done by the reload tests themselves, and the
//! calls to the reload endpoint.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{get, Gateway};

/// Writes `files` (name, text) into a fresh `{live}_{version}` beside the live directory, as
/// a conf-agent does, and returns it.
pub fn write_version(live: &Path, version: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = PathBuf::from(format!("{}_{version}", live.display()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

/// Points the symlink `link` at `target` atomically: a new link renamed over the old one.
pub fn repoint(link: &Path, target: &Path) {
    let tmp = link.with_extension("tmp-link");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

/// `/reload/{name}`, with `?path=` encoded as Go's `url.Values` encodes it (`/` as `%2F`).
pub fn reload_uri(name: &str, dir: Option<&Path>) -> String {
    match dir {
        None => format!("/reload/{name}"),
        Some(dir) => {
            let mut encoded = String::new();
            for b in dir.to_str().unwrap().bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        encoded.push(char::from(b))
                    }
                    b' ' => encoded.push('+'),
                    _ => encoded.push_str(&format!("%{b:02X}")),
                }
            }
            format!("/reload/{name}?path={encoded}")
        }
    }
}

/// Calls the reload endpoint; asserts the contract's HTTP 200 and returns the JSON reply.
pub async fn reload(gw: &Gateway, name: &str, dir: Option<&Path>) -> serde_json::Value {
    let answer = get(&gw.monitor_url(&reload_uri(name, dir))).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("content-type"), "application/json");
    answer.json()
}

/// Asserts that a reload reply says it took effect.
pub fn assert_applied(reply: &serde_json::Value) {
    assert!(reply["error"].is_null(), "reload failed: {reply}");
}

/// Waits until `check` holds, polling every 20 ms, for at most 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A ConfigMap volume as kubelet lays it out and updates it: the files in a timestamped
/// directory, `..data` linking to it, and each key a link through `..data`.
pub struct ConfigMapVolume {
    dir: PathBuf,
    version: u32,
}

impl ConfigMapVolume {
    /// Creates the volume at `dir` with `files`.
    pub fn create(dir: &Path, files: &[(&str, &str)]) -> ConfigMapVolume {
        std::fs::create_dir_all(dir).unwrap();
        let mut volume = ConfigMapVolume {
            dir: dir.to_owned(),
            version: 0,
        };
        volume.update(files);
        volume
    }

    /// kubelet's atomic writer: a new timestamped directory, a `..data_tmp` link to it
    /// renamed over `..data`, links for new keys, then the old directory removed.
    pub fn update(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        let stamp = format!("..2026_01_01_00_00_{:02}.{:09}", self.version, self.version);
        let new = self.dir.join(&stamp);
        std::fs::create_dir(&new).unwrap();
        for (name, text) in files {
            std::fs::write(new.join(name), text).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&stamp, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        for (name, _) in files {
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}
