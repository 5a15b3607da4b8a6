//! The deployment files (docker/, k8s/, grafana/) against the binary they deploy: the config
//! the manifests mount passes `sluice check`, the paths and ports they name are the ones the
//! binary reads and binds, the probe paths answer 200 on the real binary, the shutdown grace
//! period covers the drain, and the dashboard and alerts query metrics that sluice exports.
//!
//! scripts/check-deploy.sh checks the same files against the Kubernetes schemas (kustomize,
//! kubernetes-validate, hadolint, promtool); this file checks what no schema knows.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::{get, post_json};
use yaml_rust2::{Yaml, YamlLoader};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
/// The config path of the image and of the Deployment.
const CONFIG: &str = "/etc/sluice/sluice.toml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The one document of `rel`.
fn yaml1(rel: &str) -> Yaml {
    let mut docs = yaml(rel);
    assert_eq!(docs.len(), 1, "{rel}: one document expected");
    docs.remove(0)
}

fn s(y: &Yaml) -> &str {
    y.as_str()
        .unwrap_or_else(|| panic!("a string expected, got {y:?}"))
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("a list expected, got {y:?}"))
}

fn strings(y: &Yaml) -> Vec<&str> {
    list(y).iter().map(s).collect()
}

/// The element of a list of maps whose `name` is `name`.
fn named<'a>(items: &'a Yaml, name: &str) -> &'a Yaml {
    list(items)
        .iter()
        .find(|item| item["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no item named {name} in {items:?}"))
}

fn deployment() -> Yaml {
    yaml1("k8s/base/deployment.yaml")
}

fn sluice_container(deployment: &Yaml) -> Yaml {
    named(
        &deployment["spec"]["template"]["spec"]["containers"],
        "sluice",
    )
    .clone()
}

/// A TOML file of the repository as a table.
fn toml_file(rel: &str) -> toml::Table {
    read(rel).parse().unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn port_of(table: &toml::Table, key: &str) -> u16 {
    let addr: SocketAddr = table["listen"][key].as_str().unwrap().parse().unwrap();
    addr.port()
}

fn seconds(table: &toml::Table, key: &str) -> u64 {
    let text = table["server"][key].as_str().unwrap();
    humantime::parse_duration(text).unwrap().as_secs()
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("docker/Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (word, rest) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push((word.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

fn instruction(name: &str) -> String {
    let found: Vec<_> = dockerfile()
        .into_iter()
        .filter(|(word, _)| word == name)
        .map(|(_, rest)| rest)
        .collect();
    found
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in docker/Dockerfile"))
}

fn json_array(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: not a JSON array: {e}"))
}

#[test]
fn the_shipped_configs_pass_sluice_check() {
    for config in ["conf/sluice.toml", "k8s/base/conf/sluice.toml"] {
        let out = Command::new(SLUICE)
            .args(["check", "-c"])
            .arg(repo().join(config))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sluice check {config}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_deployment_runs_the_binary_as_the_image_does() {
    let container = sluice_container(&deployment());
    let args = strings(&container["args"]);
    assert_eq!(args, ["run", "-c", CONFIG]);
    assert!(
        container["command"].is_badvalue(),
        "the image's ENTRYPOINT runs sluice"
    );
    assert_eq!(
        json_array(&instruction("ENTRYPOINT")),
        ["/usr/local/bin/sluice"]
    );
    assert_eq!(json_array(&instruction("CMD")), args);
    // The image's own config sits where CMD points.
    let dockerfile = read("docker/Dockerfile");
    assert!(dockerfile.contains(&format!("COPY conf/sluice.toml /out{CONFIG}")));
    assert!(dockerfile.contains("install -d -m 0755 /out/etc/sluice/conf.d"));
    assert!(dockerfile.contains("COPY --from=build /out/ /"));
}

#[test]
fn the_mounts_put_the_config_where_the_binary_reads_it() {
    let deployment = deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = sluice_container(&deployment);
    let mounts = &container["volumeMounts"];
    let mount_at = |path: &str| {
        list(mounts)
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))
            .clone()
    };
    let config_map_of = |mount: &Yaml| {
        let volume = named(&pod["volumes"], s(&mount["name"]));
        s(&volume["configMap"]["name"]).to_owned()
    };

    // The main file: one key of the hashed ConfigMap, at the path of `-c`.
    let main = mount_at(CONFIG);
    assert_eq!(main["readOnly"].as_bool(), Some(true));
    assert_eq!(config_map_of(&main), "sluice-config");
    let key = s(&main["subPath"]).to_owned();

    // The dynamic directory: dynamic_dir of that file, relative to it, as a whole ConfigMap
    // (no subPath, or kubelet's `..data` swap would never reach it).
    let conf = toml_file("k8s/base/conf/sluice.toml");
    let dynamic_dir = conf["dynamic_dir"].as_str().unwrap();
    let dir = Path::new(CONFIG).parent().unwrap().join(dynamic_dir);
    let routes = mount_at(dir.to_str().unwrap());
    assert!(routes["subPath"].is_badvalue());
    assert_eq!(routes["readOnly"].as_bool(), Some(true));
    assert_eq!(config_map_of(&routes), "sluice-routes");

    // The generators make those ConfigMaps from the files that the tests check.
    let kustomization = yaml1("k8s/base/kustomization.yaml");
    let generators = &kustomization["configMapGenerator"];
    let config = named(generators, "sluice-config");
    assert_eq!(
        strings(&config["files"]),
        [format!("{key}=conf/sluice.toml")]
    );
    assert!(config["options"]["disableNameSuffixHash"].is_badvalue());
    let routes = named(generators, "sluice-routes");
    assert_eq!(
        routes["options"]["disableNameSuffixHash"].as_bool(),
        Some(true),
        "the routes ConfigMap must keep its name, so that an update reaches running pods"
    );
    let mut on_disk: Vec<String> =
        std::fs::read_dir(repo().join("k8s/base/conf").join(dynamic_dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".toml"))
            .map(|name| format!("conf/{dynamic_dir}/{name}"))
            .collect();
    on_disk.sort();
    let mut listed: Vec<String> = strings(&routes["files"])
        .into_iter()
        .map(str::to_owned)
        .collect();
    listed.sort();
    assert_eq!(
        listed, on_disk,
        "every routes file is in the ConfigMap, and only those"
    );
}

#[test]
fn the_ports_agree_everywhere() {
    let conf = toml_file("k8s/base/conf/sluice.toml");
    let want: BTreeMap<&str, u16> = [
        ("http", port_of(&conf, "http")),
        ("https", port_of(&conf, "https")),
        ("monitor", port_of(&conf, "monitor")),
    ]
    .into();
    assert_eq!(
        want.values().copied().collect::<Vec<_>>(),
        [8080, 8443, 8421]
    );
    // The image's default config binds the same ports.
    let image_conf = toml_file("conf/sluice.toml");
    for name in want.keys() {
        assert_eq!(
            port_of(&image_conf, name),
            want[name],
            "conf/sluice.toml {name}"
        );
    }

    let container = sluice_container(&deployment());
    let container_ports: BTreeMap<&str, u16> = list(&container["ports"])
        .iter()
        .map(|p| (s(&p["name"]), p["containerPort"].as_i64().unwrap() as u16))
        .collect();
    assert_eq!(container_ports, want);

    let mut exposed: Vec<u16> = instruction("EXPOSE")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    exposed.sort();
    let mut ports: Vec<u16> = want.values().copied().collect();
    ports.sort();
    assert_eq!(exposed, ports, "EXPOSE");

    // The NodePort Service: each port targets a named container port.
    let service = yaml1("k8s/base/service.yaml");
    assert_eq!(s(&service["spec"]["type"]), "NodePort");
    let node_ports: BTreeMap<&str, (u16, u16)> = list(&service["spec"]["ports"])
        .iter()
        .map(|p| {
            let target = s(&p["targetPort"]);
            assert!(container_ports.contains_key(target), "targetPort {target}");
            let port = p["port"].as_i64().unwrap() as u16;
            assert_eq!(port, want[target], "Service port {target}");
            (target, (port, p["nodePort"].as_i64().unwrap() as u16))
        })
        .collect();
    assert_eq!(
        node_ports,
        [
            ("http", (8080, 30080)),
            ("https", (8443, 30443)),
            ("monitor", (8421, 30421))
        ]
        .into()
    );

    // The loadbalancer overlay's monitor Service and the ServiceMonitor name the same port.
    let monitor_service = yaml1("k8s/overlays/loadbalancer/monitor-service.yaml");
    let port = &list(&monitor_service["spec"]["ports"])[0];
    assert_eq!(s(&port["name"]), "monitor");
    assert_eq!(s(&port["targetPort"]), "monitor");
    let service_monitor = yaml1("k8s/components/monitoring/servicemonitor.yaml");
    let endpoint = &list(&service_monitor["spec"]["endpoints"])[0];
    assert_eq!(s(&endpoint["port"]), "monitor");
    // job="sluice" for both Services, as in docker/prometheus.yml.
    assert_eq!(
        s(&service_monitor["spec"]["jobLabel"]),
        "app.kubernetes.io/name"
    );
    for svc in [&service, &monitor_service] {
        assert_eq!(
            s(&svc["metadata"]["labels"]["app.kubernetes.io/name"]),
            "sluice"
        );
    }

    // Compose publishes the traffic and monitor ports; Prometheus scrapes the monitor port.
    let compose = yaml1("docker/compose.yaml");
    let published = strings(&compose["services"]["sluice"]["ports"]);
    assert!(published.contains(&"8080:8080") && published.contains(&"8421:8421"));
    let prometheus = yaml1("docker/prometheus.yml");
    let scrape = &list(&prometheus["scrape_configs"])[0];
    assert_eq!(s(&scrape["job_name"]), "sluice");
    assert_eq!(s(&scrape["metrics_path"]), "/metrics");
    assert_eq!(
        strings(&list(&scrape["static_configs"])[0]["targets"]),
        [format!("sluice:{}", want["monitor"])]
    );
}

#[test]
fn the_grace_period_covers_prestop_delay_and_drain() {
    let deployment = deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = sluice_container(&deployment);
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap() as u64;
    let pre_stop = strings(&container["lifecycle"]["preStop"]["exec"]["command"]);
    assert_eq!(pre_stop[..2], ["/usr/local/bin/busybox", "sleep"]);
    let sleep: u64 = pre_stop[2].parse().unwrap();
    // The image has busybox where the hook calls it.
    assert!(read("docker/Dockerfile")
        .contains("COPY --from=busybox /bin/busybox /usr/local/bin/busybox"));

    let conf = toml_file("k8s/base/conf/sluice.toml");
    let delay = seconds(&conf, "shutdown_delay");
    let drain = seconds(&conf, "drain_timeout");
    assert!(
        grace >= sleep + delay + drain + 5,
        "terminationGracePeriodSeconds {grace} must exceed preStop {sleep}s + shutdown_delay \
         {delay}s + drain_timeout {drain}s by a margin"
    );
    // Compose stops the image's default config (drain_timeout default 30s) in time too.
    let compose = yaml1("docker/compose.yaml");
    let stop = humantime::parse_duration(s(&compose["services"]["sluice"]["stop_grace_period"]))
        .unwrap()
        .as_secs();
    let image_conf = toml_file("conf/sluice.toml");
    assert!(stop > seconds(&image_conf, "shutdown_delay") + seconds(&image_conf, "drain_timeout"));
}

#[test]
fn every_container_runs_restricted() {
    let uid: i64 = instruction("USER")
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let pods = [
        ("k8s/base/deployment.yaml", deployment()),
        (
            "k8s/components/redis/deployment.yaml",
            yaml1("k8s/components/redis/deployment.yaml"),
        ),
    ];
    for (file, deployment) in &pods {
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"].as_bool(),
            Some(true),
            "{file}"
        );
        assert_eq!(
            s(&pod["securityContext"]["seccompProfile"]["type"]),
            "RuntimeDefault",
            "{file}"
        );
        assert_eq!(
            pod["automountServiceAccountToken"].as_bool(),
            Some(false),
            "{file}"
        );
    }
    assert_eq!(
        pods[0].1["spec"]["template"]["spec"]["securityContext"]["runAsUser"].as_i64(),
        Some(uid),
        "runAsUser is the image's USER"
    );
    let patch = yaml1("k8s/components/conf-agent/deployment-patch.yaml");
    let mut containers: Vec<(String, Yaml)> = Vec::new();
    for (file, deployment) in pods
        .iter()
        .map(|(f, d)| (*f, d))
        .chain([("k8s/components/conf-agent/deployment-patch.yaml", &patch)])
    {
        let pod = &deployment["spec"]["template"]["spec"];
        for key in ["containers", "initContainers"] {
            if let Some(items) = pod[key].as_vec() {
                for c in items {
                    containers.push((format!("{file}: {}", s(&c["name"])), c.clone()));
                }
            }
        }
    }
    assert!(containers.len() >= 4);
    for (what, c) in &containers {
        if c["image"].is_badvalue() {
            continue; // a patch of a container defined elsewhere
        }
        let sc = &c["securityContext"];
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{what}"
        );
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{what}");
        assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true), "{what}");
        assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{what}");
        assert!(
            !c["resources"]["limits"]["memory"].is_badvalue(),
            "{what}: memory limit"
        );
    }
}

#[test]
fn the_manifests_deploy_this_version() {
    let want = format!("sluice:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(s(&sluice_container(&deployment())["image"]), want);
    let patch = yaml1("k8s/components/conf-agent/deployment-patch.yaml");
    let seed = named(
        &patch["spec"]["template"]["spec"]["initContainers"],
        "seed-conf",
    );
    assert_eq!(s(&seed["image"]), want);
    assert_eq!(
        s(&yaml1("docker/compose.yaml")["services"]["sluice"]["image"]),
        want
    );
}

#[test]
fn the_conf_agent_config_differs_from_the_base_only_in_dynamic_dir() {
    let mut base = toml_file("k8s/base/conf/sluice.toml");
    let mut agent = toml_file("k8s/components/conf-agent/sluice.toml");
    let live = agent.remove("dynamic_dir").unwrap();
    let live = live.as_str().unwrap().to_owned();
    base.remove("dynamic_dir");
    assert_eq!(agent, base);

    // The live directory is on the volume the agent writes and sluice reads.
    let patch = yaml1("k8s/components/conf-agent/deployment-patch.yaml");
    let pod = &patch["spec"]["template"]["spec"];
    let agent_container = named(&pod["containers"], "conf-agent");
    assert_eq!(
        s(&named(&agent_container["env"], "SLUICE_CONF_LIVE")["value"]),
        live
    );
    let conf_dir = s(&named(&agent_container["env"], "SLUICE_CONF_DIR")["value"]).to_owned();
    assert_eq!(Path::new(&live).parent().unwrap(), Path::new(&conf_dir));
    let sluice = named(&pod["containers"], "sluice");
    let mount = named(&sluice["volumeMounts"], "conf");
    assert_eq!(s(&mount["mountPath"]), conf_dir);
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let seed = named(&pod["initContainers"], "seed-conf");
    let script = strings(&seed["command"]).join(" ");
    assert!(script.contains(&format!("conf={conf_dir}")));
    assert!(script.contains("ln -s seed \"$conf/live\""));

    // What the seed step leaves (live -> seed, holding the routes ConfigMap's files) passes
    // `sluice check` with this main file.
    let dir = tempfile::tempdir().unwrap();
    let seed_dir = dir.path().join("seed");
    std::fs::create_dir(&seed_dir).unwrap();
    for entry in std::fs::read_dir(repo().join("k8s/base/conf/conf.d")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, seed_dir.join(path.file_name().unwrap())).unwrap();
    }
    std::os::unix::fs::symlink("seed", dir.path().join("live")).unwrap();
    let main = read("k8s/components/conf-agent/sluice.toml").replace(
        &format!("dynamic_dir = \"{live}\""),
        &format!("dynamic_dir = \"{}\"", dir.path().join("live").display()),
    );
    let main_path = dir.path().join("sluice.toml");
    std::fs::write(&main_path, main).unwrap();
    let out = Command::new(SLUICE)
        .args(["check", "-c"])
        .arg(&main_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The binary started with the Kubernetes config, listeners moved to 127.0.0.1:0.
struct Running {
    child: Child,
    http: SocketAddr,
    monitor: SocketAddr,
}

fn start_with_k8s_config() -> Running {
    // The config logs JSON: every line up to `listening` must be JSON.
    let (child, http, monitor) = common::binary::spawn_with(
        &repo().join("k8s/base/conf/sluice.toml"),
        &[
            "--http",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            "--monitor",
            "127.0.0.1:0",
            "--workers",
            "1",
        ],
        true,
    );
    Running {
        child,
        http,
        monitor,
    }
}

/// `http://host:port/path` → (port, path).
fn split_url(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    (
        authority.rsplit(':').next().unwrap().parse().unwrap(),
        path.to_owned(),
    )
}

#[tokio::test]
async fn the_probe_paths_answer_on_the_real_binary() {
    let deployment = deployment();
    let container = sluice_container(&deployment);
    let conf = toml_file("k8s/base/conf/sluice.toml");
    let monitor_port = port_of(&conf, "monitor");
    let mut running = start_with_k8s_config();
    let monitor = format!("http://{}", running.monitor);

    // Every path that something outside sluice polls on the monitor port.
    let mut paths = Vec::new();
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(s(&get["port"]), "monitor", "{probe} port");
        paths.push((probe.to_owned(), s(&get["path"]).to_owned()));
    }
    assert_eq!(paths[0].1, "/healthz");
    assert_eq!(paths[1].1, "/readyz");
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        s(&annotations["prometheus.io/port"]),
        monitor_port.to_string()
    );
    paths.push((
        "prometheus.io/path".into(),
        s(&annotations["prometheus.io/path"]).into(),
    ));
    let service_monitor = yaml1("k8s/components/monitoring/servicemonitor.yaml");
    let endpoint = &list(&service_monitor["spec"]["endpoints"])[0];
    paths.push(("ServiceMonitor".into(), s(&endpoint["path"]).into()));
    let healthcheck = json_array(
        instruction("HEALTHCHECK")
            .split_once("CMD ")
            .expect("HEALTHCHECK CMD")
            .1,
    );
    let (port, path) = split_url(healthcheck.last().unwrap());
    assert_eq!(port, monitor_port, "HEALTHCHECK port");
    paths.push(("HEALTHCHECK".into(), path));

    for (what, path) in &paths {
        let answer = get(&format!("{monitor}{path}")).await;
        assert_eq!(answer.status, 200, "{what}: GET {path}");
    }

    // The routes ConfigMap's mock answers the OpenAI-compatible API through the HTTP port.
    let chat = serde_json::json!({
        "model": "mock-small",
        "messages": [{"role": "user", "content": "hi"}],
    });
    let answer = post_json(
        &format!("http://{}/v1/chat/completions", running.http),
        &chat,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    // SIGTERM: the process drains and exits 0 well within the grace period.
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap() as u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(grace);
    let code = loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, Some(0));
}

/// Metric names that sluice's parallel branches add (reload, health checks, limits, auth);
/// the dashboard and alerts use them already. Once a name is in src/ this list may lose it.
const COMING: &[&str] = &[
    "sluice_config_reload_total",
    "sluice_config_last_reload_success",
    "sluice_backend_healthy",
    "sluice_ratelimit_decisions_total",
    "sluice_auth_failures_total",
];

/// Labels that Prometheus adds at scrape time, not sluice.
const TARGET_LABELS: &[&str] = &["job", "instance", "namespace", "pod", "service", "le"];

/// Every `name{matchers}` or bare `name` of sluice's in a PromQL expression, with the label
/// names its matchers use.
fn selectors(expr: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut found = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c == '"' {
            // Skip string literals: label values are not metric names.
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &expr[start..i];
            if word.starts_with("sluice_") || word.starts_with("gen_ai_") {
                let mut labels = BTreeSet::new();
                if bytes.get(i) == Some(&b'{') {
                    let end = i + expr[i..].find('}').unwrap();
                    for matcher in expr[i + 1..end].split(',') {
                        let name: String = matcher
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() {
                            labels.insert(name);
                        }
                    }
                    i = end;
                }
                found.push((word.to_owned(), labels));
            }
            continue;
        }
        i += 1;
    }
    found
}

/// The family a series name belongs to: histograms expose `_bucket`, `_sum`, `_count`.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

fn dashboard_and_alert_exprs() -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    let dashboard: serde_json::Value = serde_json::from_str(&read("grafana/sluice.json")).unwrap();
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            walk(&panel["panels"], out);
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push((
                    format!("dashboard panel {:?}", panel["title"]),
                    target["expr"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    walk(&dashboard["panels"], &mut exprs);
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["definition"].as_str() {
            exprs.push((
                format!("dashboard variable {}", variable["name"]),
                query.to_owned(),
            ));
        }
    }
    let rule = yaml1("k8s/components/monitoring/prometheusrule.yaml");
    for group in list(&rule["spec"]["groups"]) {
        for r in list(&group["rules"]) {
            exprs.push((
                format!("alert {}", s(&r["alert"])),
                s(&r["expr"]).to_owned(),
            ));
        }
    }
    assert!(exprs.len() > 30);
    exprs
}

/// All Rust source under src/, to find where metric names are defined.
fn sources() -> String {
    fn collect(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                collect(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = String::new();
    collect(&repo().join("src"), &mut out);
    out
}

#[test]
fn the_dashboard_and_alerts_query_metrics_that_sluice_defines() {
    let src = sources();
    let mut missing = Vec::new();
    for (what, expr) in dashboard_and_alert_exprs() {
        for (name, _) in selectors(&expr) {
            let family = family(&name);
            if !src.contains(&format!("\"{family}\"")) && !COMING.contains(&family) {
                missing.push(format!("{what}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics defined nowhere in src/: {missing:#?}"
    );
}

#[tokio::test]
async fn the_dashboard_and_alerts_use_the_labels_sluice_exports() {
    let running = start_with_k8s_config();
    let api = format!("http://{}/v1/chat/completions", running.http);
    for stream in [false, true] {
        let chat = serde_json::json!({
            "model": "mock-small",
            "stream": stream,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}],
        });
        assert_eq!(post_json(&api, &chat).await.status, 200);
    }
    let exposition = get(&format!("http://{}/metrics", running.monitor))
        .await
        .text();

    // name → label names, from the samples sluice exposes now.
    let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let labels = exported.entry(family(&name).to_owned()).or_default();
        if let Some(rest) = line[name.len()..].strip_prefix('{') {
            for pair in rest[..rest.find('}').unwrap()].split("\",") {
                if let Some((label, _)) = pair.split_once('=') {
                    labels.insert(label.trim().to_owned());
                }
            }
        }
    }
    // The traffic above made these appear, so the check below covers them.
    for name in [
        "sluice_requests_total",
        "sluice_request_duration_seconds",
        "gen_ai_client_token_usage",
        "gen_ai_server_time_to_first_token_seconds",
        "sluice_llm_streams_ended_total",
        "sluice_build_info",
        "sluice_config_version_info",
    ] {
        assert!(
            exported.contains_key(name),
            "{name} not in /metrics:\n{exposition}"
        );
    }
    let mut wrong = Vec::new();
    for (what, expr) in dashboard_and_alert_exprs() {
        for (name, labels) in selectors(&expr) {
            let Some(have) = exported.get(family(&name)) else {
                continue; // not exposed before its first sample
            };
            for label in labels {
                if !have.contains(&label) && !TARGET_LABELS.contains(&label.as_str()) {
                    wrong.push(format!(
                        "{what}: {name} has no label {label} (it has {have:?})"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    drop(running);
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_component_is_rendered_by_the_test_overlay() {
    let overlay = yaml1("k8s/tests/all-components/kustomization.yaml");
    let enabled: BTreeSet<String> = strings(&overlay["components"])
        .into_iter()
        .map(|c| c.rsplit('/').next().unwrap().to_owned())
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(repo().join("k8s/components"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(enabled, present);
}

#[test]
fn the_image_context_holds_what_the_dockerfile_copies() {
    // .dockerignore is an allowlist: every COPY source of the build stage must be on it.
    let ignore = read(".dockerignore");
    let allowed: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    let mut sources = 0;
    for (word, rest) in dockerfile() {
        if word != "COPY" || rest.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = rest.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            sources += 1;
            assert!(
                allowed.contains(source),
                "COPY {source}: not allowed by .dockerignore"
            );
        }
    }
    assert!(sources >= 4);
}
