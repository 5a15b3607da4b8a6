//! `sluice check` on the TLS parts of a config: certificate, key and CA files named in it
//! are read, and each problem names the config file, the key and the reason; an expired
//! certificate and skipped verification are warnings that keep exit status 0.

mod common;

use std::path::Path;

use common::check::{assert_ok, assert_problems, check, is, text, write, CLUSTER, ROUTE};

/// Writes a CA-signed certificate and key as `dir/NAME.pem` and `dir/NAME.key`.
fn issue(ca: &common::pki::Ca, dir: &Path, name: &str, dns: &str) {
    ca.server(&[dns]).write(dir, name);
}

#[test]
fn tls_files_are_checked_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = common::pki::Ca::new("test CA");
    issue(&ca, d, "api", "api.example.com");
    issue(&ca, d, "other", "other.example.com");
    write(&d.join("notes.txt"), "not a certificate\n");
    let main = d.join("sluice.toml");
    write(
        &main,
        r#"
[[certificates]]
name = "missing"
cert = "missing.pem"
key = "api.key"
default = true

[[certificates]]
name = "mismatch"
cert = "api.pem"
key = "other.key"
default = true

[[certificates]]
name = "not-pem"
cert = "notes.txt"
key = "api.key"

[[certificates]]
name = "no-key"
cert = "api.pem"
key = "api.pem"

[[certificates]]
name = "no-key"
cert = "api.pem"
key = "api.key"

[tls.client_auth]
ca = "clients.pem"

[[clusters]]
name = "models"
backends = [{ url = "https://api.openai.com" }]
tls = { ca = "private-ca.pem" }
"#,
    );
    let path = |name: &str| d.join(name).display().to_string();
    let enoent = "No such file or directory (os error 2)";
    assert_problems(
        &check(&main),
        &[
            (
                &main,
                is(
                    "clusters[0].tls.ca",
                    format!("cannot read {}: {enoent}", path("private-ca.pem")),
                ),
            ),
            (
                &main,
                is(
                    "certificates[0].cert",
                    format!("cannot read {}: {enoent}", path("missing.pem")),
                ),
            ),
            (
                &main,
                is(
                    "certificates[1].default",
                    format!(
                        "certificate `missing` in {} is already the default",
                        main.display()
                    ),
                ),
            ),
            (
                &main,
                is(
                    "certificates[1].key",
                    format!(
                        "the private key in {} does not match the certificate in {}",
                        path("other.key"),
                        path("api.pem")
                    ),
                ),
            ),
            (
                &main,
                is(
                    "certificates[2].cert",
                    format!("{} holds no PEM certificate", path("notes.txt")),
                ),
            ),
            (
                &main,
                is(
                    "certificates[3].key",
                    format!(
                        "{} holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)",
                        path("api.pem")
                    ),
                ),
            ),
            (
                &main,
                is(
                    "certificates[4].name",
                    format!(
                        "certificate `no-key` is already defined in {}",
                        main.display()
                    ),
                ),
            ),
            (
                &main,
                is(
                    "tls.client_auth.ca",
                    format!("cannot read {}: {enoent}", path("clients.pem")),
                ),
            ),
        ],
    );
}

#[test]
fn an_expired_certificate_and_skipped_verification_are_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = common::pki::Ca::new("test CA");
    ca.expired_server(&["old.example.com"]).write(d, "old");
    let main = d.join("sluice.toml");
    write(
        &main,
        &format!(
            r#"
[[certificates]]
name = "old"
cert = "old.pem"
key = "old.key"

[[clusters]]
name = "models"
backends = [{{ url = "https://10.0.0.5:8443" }}]
tls = {{ insecure_skip_verify = true }}
{ROUTE}"#
        ),
    );
    let out = check(&main);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        text(&out.stdout).starts_with(&format!("{}: ok (1 routes, 1 clusters", main.display())),
        "{}",
        text(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    let file = main.display();
    assert!(
        lines[0].starts_with(&format!(
            "warning: {file}:clusters[0].tls.insecure_skip_verify: certificates of cluster \
             `models`'s backends are not verified"
        )),
        "{stderr}"
    );
    let expired = format!(
        "warning: {file}:certificates[0].cert: the certificate in {} expired on \
         2021-01-01T00:00:00Z (",
        d.join("old.pem").display()
    );
    assert!(lines[1].starts_with(&expired), "{stderr}");
    assert!(lines[1].ends_with(" days ago)"), "{stderr}");
}

#[test]
fn certificate_paths_are_relative_to_the_file_that_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir_all(conf_d.join("certs")).unwrap();
    let ca = common::pki::Ca::new("test CA");
    issue(&ca, &conf_d.join("certs"), "api", "api.example.com");
    let main = dir.path().join("sluice.toml");
    write(
        &main,
        &format!("dynamic_dir = \"conf.d\"\n{CLUSTER}{ROUTE}"),
    );
    write(
        &conf_d.join("10-tls.toml"),
        "[[certificates]]\nname = \"api\"\ncert = \"certs/api.pem\"\nkey = \"certs/api.key\"\n",
    );
    assert_ok(&main);
}
