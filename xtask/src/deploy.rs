//! The deployment files, checked by the tools made for them: hadolint (the
//! `Dockerfile`), kubernetes-validate (`deploy/k8s/`, against a stated
//! Kubernetes version), `nginx -t` (`deploy/nginx/heartsync.conf`, ports
//! filled in as `cargo xtask cluster` does) and `promtool check config`.
//! `cargo xtask ci` runs [`check`].
//!
//! What no tool checks is in the unit tests below: that docker-compose.yml
//! and the manifests use the very config files `cargo xtask cluster` runs
//! (`docker compose config` is not available without a container engine).

use std::{
    env, fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::{
    cluster::{nginx_main, nginx_site},
    install,
    process::{Steps, run},
};

/// The Kubernetes version the manifests are validated against (its schemas
/// ship with kubernetes-validate). The Deployment's `preStop: sleep` needs
/// 1.30 or later.
pub const KUBERNETES_VERSION: &str = "1.34.0";

/// Runs every deploy linter, each as a step.
pub fn check(root: &Path, steps: &mut Steps) -> Result<()> {
    let bin = steps.run("install hadolint, kubernetes-validate", install::python_tools)?;
    steps.run("hadolint Dockerfile", || {
        // `style` is the lowest severity: every finding fails, and a finding
        // that is accepted carries a `# hadolint ignore=` with its reason.
        run(Command::new(bin.join("hadolint"))
            .args(["--failure-threshold", "style"])
            .arg(root.join("Dockerfile")))
    })?;
    steps.run(
        &format!("kubernetes-validate deploy/k8s (Kubernetes {KUBERNETES_VERSION})"),
        || {
            run(Command::new(bin.join("kubernetes-validate"))
                .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
                .args(manifests(root)?))
        },
    )?;
    steps.run("nginx -t deploy/nginx/heartsync.conf", || nginx_test(root))?;
    steps.run("promtool check config deploy/prometheus/prometheus.yml", || {
        run(Command::new("promtool")
            .args(["check", "config"])
            .arg(root.join("deploy/prometheus/prometheus.yml")))
    })
}

/// Every manifest under `deploy/k8s/`, sorted.
fn manifests(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("deploy/k8s");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// `nginx -t` on the site config with loopback ports filled in (nginx
/// resolves upstream names at load, and compose's names exist only there).
fn nginx_test(root: &Path) -> Result<()> {
    let dir = env::temp_dir().join(format!("heartsync-nginx-t-{}", std::process::id()));
    fs::create_dir_all(dir.join("tmp")).with_context(|| format!("create {}", dir.display()))?;
    let result = (|| {
        let template = fs::read_to_string(root.join("deploy/nginx/heartsync.conf"))
            .context("read deploy/nginx/heartsync.conf")?;
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let site = dir.join("heartsync.conf");
        fs::write(
            &site,
            nginx_site(&template, loopback(8080), &[loopback(8081), loopback(8082)])?,
        )?;
        let main = dir.join("nginx.conf");
        fs::write(&main, nginx_main(&dir, &site))?;
        run(Command::new("nginx").arg("-t").arg("-p").arg(&dir).arg("-c").arg(&main))
    })();
    fs::remove_dir_all(&dir).ok();
    result
}

#[cfg(test)]
mod tests {
    //! docker-compose.yml and deploy/k8s/ against deploy/'s config files.

    use super::*;
    use serde_yaml::Value;
    use std::collections::BTreeSet;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn read(path: &str) -> String {
        fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    /// A YAML file with its `<<` merge keys applied (compose's anchors).
    fn yaml(path: &str) -> Value {
        let mut value: Value =
            serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        value.apply_merge().unwrap_or_else(|e| panic!("{path}: {e}"));
        value
    }

    /// Every document of a multi-document YAML file.
    fn documents(path: &str) -> Vec<Value> {
        serde_yaml::Deserializer::from_str(&read(path))
            .map(|document| Value::deserialize(document).unwrap_or_else(|e| panic!("{path}: {e}")))
            .collect()
    }
    use serde::Deserialize;

    fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
        value.as_str().unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
    }

    fn services() -> Value {
        yaml("docker-compose.yml")["services"].clone()
    }

    fn service_names() -> BTreeSet<String> {
        services()
            .as_mapping()
            .expect("services is a mapping")
            .keys()
            .map(|key| str_of(key, "a service name").to_string())
            .collect()
    }

    /// The heartsync instances of docker-compose.yml, sorted.
    fn instances() -> Vec<String> {
        service_names().into_iter().filter(|name| name.starts_with("heartsync-")).collect()
    }

    /// `(source, target)` of a service's bind mounts (`./path:/target[:ro]`).
    fn bind_mounts(service: &str) -> Vec<(String, String)> {
        services()[service]["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|volume| str_of(volume, "a volume"))
            .filter(|volume| volume.starts_with("./"))
            .map(|volume| {
                let mut parts = volume.split(':');
                let source = parts.next().unwrap_or_default().to_string();
                let target = parts.next().unwrap_or_default().to_string();
                (source, target)
            })
            .collect()
    }

    /// Where `service` mounts the repository file or folder `source`.
    fn mount_of(service: &str, source: &str) -> String {
        bind_mounts(service)
            .into_iter()
            .find(|(from, _)| from == source)
            .map(|(_, target)| target)
            .unwrap_or_else(|| panic!("{service} does not mount {source}"))
    }

    /// A duration such as `5s`, `250ms` or `60` (seconds), in milliseconds.
    fn millis(text: &str) -> u64 {
        let text = text.trim();
        let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
            Some(at) => text.split_at(at),
            None => (text, "s"),
        };
        let number: u64 = number.parse().unwrap_or_else(|_| panic!("not a duration: {text:?}"));
        match unit {
            "ms" => number,
            "s" => number * 1000,
            "m" => number * 60_000,
            _ => panic!("unknown unit in {text:?}"),
        }
    }

    /// The server's flag defaults the proxies must allow for, from the README
    /// table (`| \`--ping-interval\` | \`25s\` | …`).
    fn server_default(flag: &str) -> u64 {
        let readme = read("README.md");
        let row = readme
            .lines()
            .find(|line| line.starts_with(&format!("| `{flag}` |")))
            .unwrap_or_else(|| panic!("README.md has no row for {flag}"));
        let default = row.split('|').nth(2).expect("a default column").trim().trim_matches('`');
        millis(default)
    }

    #[test]
    fn compose_runs_the_whole_topology() {
        let names = service_names();
        for wanted in ["redis", "nginx", "prometheus", "grafana"] {
            assert!(names.contains(wanted), "docker-compose.yml has no {wanted} service");
        }
        assert_eq!(instances(), ["heartsync-1", "heartsync-2", "heartsync-3"]);
        assert_eq!(names.len(), 7, "unexpected services: {names:?}");
    }

    #[test]
    fn compose_mounts_only_files_that_exist() {
        for service in service_names() {
            for (source, _) in bind_mounts(&service) {
                assert!(
                    root().join(&source).exists(),
                    "{service} mounts {source}, which is missing"
                );
            }
        }
    }

    #[test]
    fn compose_uses_the_config_files_the_cluster_runs() {
        assert_eq!(
            mount_of("nginx", "./deploy/nginx/heartsync.conf"),
            "/etc/nginx/conf.d/default.conf"
        );

        let redis_conf = mount_of("redis", "./deploy/redis/redis.conf");
        let services = services();
        let command: Vec<&str> = services["redis"]["command"]
            .as_sequence()
            .expect("redis has a command")
            .iter()
            .map(|word| str_of(word, "a command word"))
            .collect();
        assert_eq!(command, ["redis-server", redis_conf.as_str()]);

        let prometheus_dir = mount_of("prometheus", "./deploy/prometheus");
        let flags: Vec<&str> = services["prometheus"]["command"]
            .as_sequence()
            .expect("prometheus has a command")
            .iter()
            .map(|word| str_of(word, "a flag"))
            .collect();
        assert!(
            flags.contains(&format!("--config.file={prometheus_dir}/prometheus.yml").as_str()),
            "{flags:?}"
        );

        // The dashboard sits where the provisioning file tells Grafana to look.
        let dashboards = mount_of("grafana", "./deploy/grafana/heartsync-dashboard.json");
        let provider = yaml("deploy/grafana/provisioning/dashboards/heartsync.yml");
        let path = str_of(&provider["providers"][0]["options"]["path"], "the provider's path");
        assert_eq!(Path::new(&dashboards).parent(), Some(Path::new(path)));
        assert_eq!(
            mount_of("grafana", "./deploy/grafana/provisioning/dashboards"),
            "/etc/grafana/provisioning/dashboards"
        );
        assert_eq!(
            mount_of("grafana", "./deploy/grafana/provisioning/datasources"),
            "/etc/grafana/provisioning/datasources"
        );
        let datasources = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
        let url = str_of(&datasources["datasources"][0]["url"], "the data source URL");
        assert_eq!(url, "http://prometheus:9090");
    }

    #[test]
    fn nginx_and_prometheus_know_every_compose_instance() {
        let wanted: Vec<String> = instances().iter().map(|name| format!("{name}:8080")).collect();

        let conf = read("deploy/nginx/heartsync.conf");
        let block = conf.split("upstream heartsync {").nth(1).expect("an upstream block");
        let upstream: Vec<String> = block
            .split('}')
            .next()
            .unwrap_or_default()
            .lines()
            .map(|line| line.split('#').next().unwrap_or("").trim())
            .filter_map(|line| line.strip_prefix("server "))
            .map(|rest| {
                rest.split_whitespace().next().unwrap_or("").trim_end_matches(';').to_string()
            })
            .collect();
        assert_eq!(upstream, wanted, "nginx's upstream");

        let targets = yaml("deploy/prometheus/targets/heartsync.yml");
        let listed: Vec<String> = targets[0]["targets"]
            .as_sequence()
            .expect("a targets list")
            .iter()
            .map(|target| str_of(target, "a target").to_string())
            .collect();
        assert_eq!(listed, wanted, "Prometheus's targets");
        let prometheus = read("deploy/prometheus/prometheus.yml");
        assert!(
            prometheus.contains("- targets/heartsync.yml"),
            "prometheus.yml does not read the targets file"
        );
    }

    #[test]
    fn compose_publishes_nginx_on_its_listen_port() {
        let conf = read("deploy/nginx/heartsync.conf");
        let listen = conf
            .lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix("listen "))
            .expect("a listen line")
            .trim_end_matches(';');
        let services = services();
        let ports: Vec<&str> = services["nginx"]["ports"]
            .as_sequence()
            .expect("nginx publishes a port")
            .iter()
            .map(|port| str_of(port, "a port"))
            .collect();
        assert!(
            ports.iter().any(|port| port.ends_with(&format!(":{listen}"))),
            "{ports:?} vs listen {listen}"
        );
    }

    #[test]
    fn compose_instances_share_redis_and_check_their_own_health() {
        let services = services();
        for name in instances() {
            let instance = &services[name.as_str()];
            assert_eq!(
                instance["environment"]["HEARTSYNC_REDIS_URL"].as_str(),
                Some("redis://redis:6379/0"),
                "{name}"
            );
            let test: Vec<&str> = instance["healthcheck"]["test"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{name} has no health check"))
                .iter()
                .map(|word| str_of(word, "a word"))
                .collect();
            assert_eq!(test, ["CMD", "heartsync", "healthcheck"], "{name}");
            assert_eq!(
                instance["depends_on"]["redis"]["condition"].as_str(),
                Some("service_healthy")
            );
            assert_eq!(
                instance["read_only"].as_bool(),
                Some(true),
                "{name}: read-only root filesystem"
            );
            let grace = millis(str_of(&instance["stop_grace_period"], "stop_grace_period"));
            assert!(
                grace > server_default("--drain") + 3_000,
                "{name}: stop_grace_period {grace} ms"
            );
        }
    }

    #[test]
    fn compose_waits_only_on_health_checks_that_exist() {
        let services = services();
        for (name, service) in services.as_mapping().expect("services").iter() {
            let name = str_of(name, "a service name");
            let Some(depends) = service["depends_on"].as_mapping() else { continue };
            for (dependency, condition) in depends {
                let dependency = str_of(dependency, "a dependency");
                assert!(
                    service_names().contains(dependency),
                    "{name} depends on unknown {dependency}"
                );
                if condition["condition"].as_str() == Some("service_healthy") {
                    assert!(
                        services[dependency]["healthcheck"].is_mapping(),
                        "{name} waits for {dependency} to be healthy, which has no health check"
                    );
                }
            }
        }
    }

    #[test]
    fn kubernetes_redis_runs_deploy_redis_conf_verbatim() {
        let config = documents("deploy/k8s/redis.yaml")
            .into_iter()
            .find(|doc| doc["kind"].as_str() == Some("ConfigMap"))
            .expect("redis.yaml has a ConfigMap");
        assert_eq!(
            config["data"]["redis.conf"].as_str(),
            Some(read("deploy/redis/redis.conf").as_str()),
            "deploy/k8s/redis.yaml's redis.conf differs from deploy/redis/redis.conf: copy it over"
        );
    }

    #[test]
    fn kubernetes_gives_a_pod_time_to_drain() {
        let deployment = &documents("deploy/k8s/deployment.yaml")[0];
        let pod = &deployment["spec"]["template"]["spec"];
        let grace = pod["terminationGracePeriodSeconds"].as_u64().expect("a grace period") * 1000;
        let pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .expect("a preStop sleep")
            * 1000;
        let config = &documents("deploy/k8s/configmap.yaml")[0];
        let drain = millis(str_of(&config["data"]["HEARTSYNC_DRAIN"], "HEARTSYNC_DRAIN"));
        assert!(
            grace > pre_stop + drain + 3_000,
            "{grace} ms <= preStop {pre_stop} + drain {drain} + 3 s"
        );
        assert_eq!(
            pod["containers"][0]["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/livez")
        );
        assert_eq!(
            pod["containers"][0]["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/readyz")
        );
    }

    #[test]
    fn proxies_wait_longer_than_a_ping_and_its_pong() {
        let needed = server_default("--ping-interval") + server_default("--pong-timeout");
        let conf = read("deploy/nginx/heartsync.conf");
        let ws = conf.split("location /ws").nth(1).expect("a /ws location");
        let block = ws.split('}').next().unwrap_or_default();
        let timeout = block
            .lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix("proxy_read_timeout "))
            .expect("/ws sets proxy_read_timeout")
            .trim_end_matches(';');
        assert!(millis(timeout) > needed, "nginx /ws proxy_read_timeout {timeout}");
        assert!(
            block.contains("proxy_set_header")
                || conf.contains("proxy_set_header Upgrade $http_upgrade")
        );

        let ingress = &documents("deploy/k8s/ingress.yaml")[0];
        let annotation =
            &ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"];
        assert!(millis(str_of(annotation, "the Ingress read timeout")) > needed);
    }

    #[test]
    fn the_image_ships_what_ci_builds_and_checks_itself() {
        let dockerfile = read("Dockerfile");
        assert!(
            dockerfile.contains("cargo xtask build"),
            "the build stage must run `cargo xtask build`"
        );
        let runtime = dockerfile.rsplit("\nFROM ").next().expect("a runtime stage");
        let copies: Vec<&str> = runtime.lines().filter(|line| line.starts_with("COPY")).collect();
        assert_eq!(
            copies.len(),
            2,
            "the runtime stage copies the binary and dist/ only: {copies:?}"
        );
        assert!(runtime.contains("USER 10001"), "the runtime stage runs as a non-root user");
        assert!(runtime.contains("CMD [\"heartsync\", \"healthcheck\"]"));
        let ignored = read(".dockerignore");
        for path in ["target/", "data/"] {
            assert!(ignored.lines().any(|line| line.trim() == path), ".dockerignore lacks {path}");
        }
    }

    #[test]
    fn manifests_are_found() {
        let names: Vec<String> = manifests(&root())
            .expect("list deploy/k8s")
            .iter()
            .filter_map(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
            .collect();
        for wanted in ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml", "ingress.yaml"] {
            assert!(
                names.iter().any(|name| name == wanted),
                "deploy/k8s lacks {wanted}: {names:?}"
            );
        }
    }
}
