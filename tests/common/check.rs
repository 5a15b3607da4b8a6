//! The `sluice check` harness shared by tests/check.rs and tests/check_tls.rs: run the real
//! binary and compare its stderr with the expected `file:key: reason` lines.

use std::path::Path;
use std::process::{Command, Output};

pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// A valid cluster named `models`.
pub const CLUSTER: &str = r#"
[[clusters]]
name = "models"
backends = [{ url = "http://127.0.0.1:9000" }]
"#;

/// A valid route to `models`; cases append keys to it.
pub const ROUTE: &str = r#"
[[routes]]
name = "chat"
cluster = "models"
"#;

/// One expected stderr line, for a given file.
#[derive(Debug)]
pub enum Want {
    /// The line is exactly `file:key: reason`; `{file}` in the reason stands for the file.
    Is(&'static str, String),
    /// The line starts with `file:key: ` (or `file: ` for an empty key) and its reason
    /// contains every fragment: for reasons that carry a TOML line and column.
    Has(&'static str, Vec<String>),
}

pub fn is(key: &'static str, reason: impl Into<String>) -> Want {
    Want::Is(key, reason.into())
}

pub fn has(key: &'static str, fragments: &[&'static str]) -> Want {
    Want::Has(key, fragments.iter().map(|f| f.to_string()).collect())
}

impl Want {
    fn matches(&self, file: &Path, line: &str) -> bool {
        let file = file.display();
        match self {
            Want::Is(key, reason) => {
                let reason = reason.replace("{file}", &file.to_string());
                line == format!("{file}:{key}: {reason}")
            }
            Want::Has(key, fragments) => {
                let prefix = if key.is_empty() {
                    format!("{file}: ")
                } else {
                    format!("{file}:{key}: ")
                };
                line.strip_prefix(&prefix)
                    .is_some_and(|reason| fragments.iter().all(|f| reason.contains(f.as_str())))
            }
        }
    }
}

pub fn run(args: &[&str]) -> Output {
    Command::new(SLUICE)
        .args(args)
        .output()
        .expect("the sluice binary runs")
}

pub fn check(path: &Path) -> Output {
    run(&["check", "-c", path.to_str().expect("temp paths are UTF-8")])
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Compares stderr with the expected lines, in order; `Err` says what differed.
pub fn compare(out: &Output, want: &[(&Path, Want)]) -> Result<(), String> {
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let describe = || format!("want {want:#?}\ngot stderr:\n{stderr}");
    if out.status.success() {
        return Err(format!("exit status 0\n{}", describe()));
    }
    if !out.stdout.is_empty() {
        return Err(format!("stdout not empty: {}", text(&out.stdout)));
    }
    if lines.len() != want.len() {
        return Err(format!(
            "{} lines, not {}\n{}",
            lines.len(),
            want.len(),
            describe()
        ));
    }
    for (line, (file, w)) in lines.iter().zip(want) {
        if !w.matches(file, line) {
            return Err(format!("line {line:?} does not match\n{}", describe()));
        }
    }
    Ok(())
}

pub fn assert_problems(out: &Output, want: &[(&Path, Want)]) {
    if let Err(why) = compare(out, want) {
        panic!("{why}");
    }
}

pub fn assert_ok(path: &Path) -> String {
    let out = check(path);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{} rejected:\n{}",
        path.display(),
        text(&out.stderr)
    );
    let ok = format!("{}: ok (", path.display());
    assert!(stdout.starts_with(&ok), "stdout: {stdout}");
    assert!(out.stderr.is_empty(), "stderr: {}", text(&out.stderr));
    stdout
}

pub fn write(path: &Path, toml: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, toml).unwrap();
}
