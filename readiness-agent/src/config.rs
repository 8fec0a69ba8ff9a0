//! The command line (every flag with an environment fallback) and the checked configuration.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tonic::codegen::http::Uri;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::Error;
use crate::target::Target;
use crate::verdict::Thresholds;

/// How long connecting to the controller may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one report may take, connecting included.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// triton-agent: probes the application in its pod and reports the verdict to the Triton
/// controller (on every change, and as a heartbeat), authenticated with the pod's projected
/// ServiceAccount token.
#[derive(Parser, Debug, Clone)]
#[command(name = "triton-agent", version)]
pub struct Args {
    /// What to probe: http://[host]:port[/path] (a GET; 2xx and 3xx are healthy) or
    /// tcp://[host]:port (a connect). An empty host is the pod itself (127.0.0.1).
    #[arg(long, env = "TRITON_AGENT_TARGET")]
    pub target: Target,

    /// Time between probes.
    #[arg(long, env = "TRITON_AGENT_PERIOD", default_value = "1s", value_parser = positive_duration)]
    pub period: Duration,

    /// How long a probe may take before it counts as failed.
    #[arg(long, env = "TRITON_AGENT_TIMEOUT", default_value = "1s", value_parser = positive_duration)]
    pub timeout: Duration,

    /// Consecutive successes that make an unhealthy verdict healthy.
    #[arg(long, env = "TRITON_AGENT_SUCCESS_THRESHOLD", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub success_threshold: u32,

    /// Consecutive failures that make a healthy verdict unhealthy.
    #[arg(long, env = "TRITON_AGENT_FAILURE_THRESHOLD", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub failure_threshold: u32,

    /// Time between reports when nothing changes (the controller's reply may ask for another).
    #[arg(long, env = "TRITON_AGENT_HEARTBEAT", default_value = "10s", value_parser = positive_duration)]
    pub heartbeat: Duration,

    /// The controller's agent service, http://host:port or https://host:port.
    #[arg(long, env = "TRITON_AGENT_CONTROLLER", value_parser = controller_uri)]
    pub controller: Uri,

    /// PEM CA certificate(s) to trust for an https controller (default: the system's roots).
    #[arg(long, env = "TRITON_AGENT_CONTROLLER_CA")]
    pub controller_ca: Option<PathBuf>,

    /// The projected ServiceAccount token (audience triton-agent), sent as bearer token and read
    /// again whenever the kubelet rotates it.
    #[arg(long, env = "TRITON_AGENT_TOKEN_FILE", default_value_os_t = default_token_file())]
    pub token_file: PathBuf,

    /// The pod's name (downward API).
    #[arg(long, env = "POD_NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub pod_name: String,

    /// The pod's namespace (downward API).
    #[arg(long, env = "POD_NAMESPACE", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub pod_namespace: String,

    /// The pod's UID (downward API).
    #[arg(long, env = "POD_UID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub pod_uid: String,

    /// Log format.
    #[arg(long, env = "TRITON_AGENT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn default_token_file() -> PathBuf {
    PathBuf::from(triton_core::names::AGENT_TOKEN_DIR).join("token")
}

/// A humantime duration (`1s`, `500ms`, `1m30s`), more than zero.
fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 1s, 500ms, 1m30s)"))?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

/// `http://host:port` or `https://host:port`, nothing after the authority.
fn controller_uri(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("{e} (expected http://host:port or https://host:port)"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("the scheme must be http or https".into());
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("a host is needed, e.g. https://triton-controller.triton-system:8097".into());
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err("nothing may follow host:port".into());
    }
    Ok(uri)
}

/// The pod the agent reports for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Everything `run` needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub target: Target,
    pub period: Duration,
    pub timeout: Duration,
    pub thresholds: Thresholds,
    pub heartbeat: Duration,
    /// The controller's agent service, TLS configured for https.
    pub controller: Endpoint,
    pub token_file: PathBuf,
    pub pod: Pod,
}

impl Args {
    /// Reads the CA file and configures the controller's endpoint.
    pub fn config(self) -> Result<Config, Error> {
        let https = self.controller.scheme_str() == Some("https");
        let mut controller = Endpoint::from(self.controller.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REPORT_TIMEOUT)
            .user_agent(concat!("triton-agent/", env!("CARGO_PKG_VERSION")))
            .expect("a static user agent is a valid header");
        match (https, self.controller_ca) {
            (false, None) => {}
            (false, Some(_)) => return Err(Error::CaWithoutTls(self.controller.to_string())),
            (true, ca) => {
                let tls = match ca {
                    Some(path) => {
                        let pem = std::fs::read(&path)
                            .map_err(|source| Error::ReadCa { path, source })?;
                        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                    }
                    None => ClientTlsConfig::new(),
                };
                controller = controller
                    .tls_config(tls)
                    .map_err(|source| Error::ConfigureTls {
                        controller: self.controller.to_string(),
                        source,
                    })?;
            }
        }
        Ok(Config {
            target: self.target,
            period: self.period,
            timeout: self.timeout,
            thresholds: Thresholds {
                success: self.success_threshold,
                failure: self.failure_threshold,
            },
            heartbeat: self.heartbeat,
            controller,
            token_file: self.token_file,
            pod: Pod {
                namespace: self.pod_namespace,
                name: self.pod_name,
                uid: self.pod_uid,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    const POD: [&str; 6] = [
        "--pod-name",
        "web-0",
        "--pod-namespace",
        "shop",
        "--pod-uid",
        "u-1",
    ];

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let base = ["triton-agent", "--controller", "http://127.0.0.1:8097"];
        Args::try_parse_from(base.iter().chain(&POD).chain(extra))
    }

    #[test]
    fn args_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_are_kubelets_and_the_projected_token() {
        let c = parse(&["--target", "http://:8080/healthz"])
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(c.target.to_string(), "http://:8080/healthz");
        assert_eq!(
            (c.period, c.timeout),
            (Duration::from_secs(1), Duration::from_secs(1))
        );
        assert_eq!(
            c.thresholds,
            Thresholds {
                success: 1,
                failure: 3
            }
        );
        assert_eq!(c.heartbeat, Duration::from_secs(10));
        assert_eq!(c.token_file, PathBuf::from("/var/run/secrets/triton/token"));
        assert_eq!(
            c.pod,
            Pod {
                namespace: "shop".into(),
                name: "web-0".into(),
                uid: "u-1".into()
            }
        );
    }

    #[test]
    fn flags_override_the_defaults() {
        let c = parse(&[
            "--target",
            "tcp://:5432",
            "--period",
            "500ms",
            "--timeout",
            "2s",
            "--success-threshold",
            "2",
            "--failure-threshold",
            "5",
            "--heartbeat",
            "1m",
            "--token-file",
            "/t",
        ])
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(
            (c.period, c.timeout),
            (Duration::from_millis(500), Duration::from_secs(2))
        );
        assert_eq!(
            c.thresholds,
            Thresholds {
                success: 2,
                failure: 5
            }
        );
        assert_eq!(
            (c.heartbeat, c.token_file),
            (Duration::from_secs(60), PathBuf::from("/t"))
        );
    }

    #[test]
    fn invalid_flags_are_usage_errors() {
        let t = ["--target", "http://:8080/"];
        for (extra, kind) in [
            (
                &["--target", "http://localhost/healthz"][..],
                ErrorKind::ValueValidation,
            ),
            (&[], ErrorKind::MissingRequiredArgument),
            (&[t[0], t[1], "--period", "0s"], ErrorKind::ValueValidation),
            (
                &[t[0], t[1], "--timeout", "soon"],
                ErrorKind::ValueValidation,
            ),
            (
                &[t[0], t[1], "--failure-threshold", "0"],
                ErrorKind::ValueValidation,
            ),
            (
                &[t[0], t[1], "--log-format", "xml"],
                ErrorKind::InvalidValue,
            ),
        ] {
            let err = parse(extra).unwrap_err();
            assert_eq!(err.kind(), kind, "{extra:?}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
        let err = parse(&["--target", "http://localhost/healthz"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing port"), "{err}");
        let empty_uid = ["--pod-name", "a", "--pod-namespace", "b", "--pod-uid", ""];
        let err = Args::try_parse_from(
            ["triton-agent", "--controller", "http://c:1", t[0], t[1]]
                .iter()
                .chain(&empty_uid),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue, "{err}");
    }

    #[test]
    fn controller_addresses_are_checked() {
        for ok in [
            "http://127.0.0.1:8097",
            "https://triton-agent.triton-system:8097",
            "http://c/",
        ] {
            assert!(controller_uri(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("127.0.0.1:8097", "scheme"),
            ("grpc://c:1", "scheme"),
            ("http://c:1/agent", "nothing may follow"),
            ("http://", ""),
        ] {
            let err = controller_uri(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn a_ca_needs_an_https_controller_and_a_readable_file() {
        let args = |controller: &str| {
            let mut a = parse(&["--target", "tcp://:1"]).unwrap();
            a.controller = controller.parse().unwrap();
            a.controller_ca = Some("/nonexistent/ca.pem".into());
            a
        };
        let err = args("http://c:1").config().unwrap_err();
        assert!(matches!(err, Error::CaWithoutTls(_)), "{err}");
        let err = args("https://c:1").config().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
