//! Command-line flags, each with an environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::mutate::AgentSettings;
use crate::server::Limits;

/// Triton's mutating admission webhook: injects the readiness gate `apps.triton.io/ready` into pods
/// of Triton-managed CloneSets. A pod asking for the readiness-agent sidecar (annotation
/// `apps.triton.io/agent`) gets it, unless --enable-agent=false.
#[derive(Parser, Debug, Clone)]
#[command(name = "triton-webhook", version, about, long_about = None)]
pub struct Args {
    /// HTTPS address serving /mutate-pods (and /healthz, /readyz, /metrics).
    #[arg(long, env = "TRITON_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Plain-HTTP address for /healthz, /readyz and /metrics; "off" disables it.
    #[arg(long, env = "TRITON_WEBHOOK_ADMIN_LISTEN", default_value = "0.0.0.0:9090", value_parser = parse_optional_addr)]
    pub admin_listen: OptionalAddr,

    /// PEM certificate chain served to the API server.
    #[arg(
        long,
        env = "TRITON_WEBHOOK_TLS_CERT",
        default_value = "/etc/triton-webhook/tls/tls.crt"
    )]
    pub tls_cert: PathBuf,

    /// PEM private key of the certificate.
    #[arg(
        long,
        env = "TRITON_WEBHOOK_TLS_KEY",
        default_value = "/etc/triton-webhook/tls/tls.key"
    )]
    pub tls_key: PathBuf,

    /// How often the certificate files are checked for changes.
    #[arg(long, env = "TRITON_WEBHOOK_CERT_RELOAD_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub cert_reload_interval: Duration,

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "TRITON_WEBHOOK_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Largest AdmissionReview body accepted, in bytes.
    #[arg(long, env = "TRITON_WEBHOOK_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// A connection that has not completed its TLS handshake this long after it was accepted is
    /// closed.
    #[arg(long, env = "TRITON_WEBHOOK_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub tls_handshake_timeout: Duration,

    /// A request whose headers have not all arrived this long after the server began waiting for
    /// them is refused and its connection closed (slow or silent clients). HTTP/1.1 also closes a
    /// keep-alive connection that sends no new request for this long.
    #[arg(long, env = "TRITON_WEBHOOK_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub header_read_timeout: Duration,

    /// A request whose body has not fully arrived this long after its headers gets 408.
    #[arg(long, env = "TRITON_WEBHOOK_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub body_read_timeout: Duration,

    /// A keep-alive connection with no request in flight for this long is closed (HTTP/2: with
    /// GOAWAY).
    #[arg(long, env = "TRITON_WEBHOOK_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,

    /// Most connections open at once, per listener. At the limit no new connection is accepted
    /// (they wait in the listen backlog) until one closes.
    #[arg(long, env = "TRITON_WEBHOOK_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Log format: json or text.
    #[arg(long, env = "TRITON_WEBHOOK_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,

    /// Inject the readiness-agent sidecar into pods that ask for it (annotation
    /// `apps.triton.io/agent`). With `--enable-agent=false` such pods are refused, saying so.
    #[arg(long, env = "TRITON_WEBHOOK_ENABLE_AGENT", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub enable_agent: bool,

    /// Image of the injected readiness-agent sidecar.
    #[arg(long, env = "TRITON_WEBHOOK_AGENT_IMAGE", default_value_t = AgentSettings::default().image)]
    pub agent_image: String,

    /// Address of the controller's agent API, given to the agent.
    #[arg(long, env = "TRITON_WEBHOOK_AGENT_CONTROLLER", default_value_t = AgentSettings::default().controller_address)]
    pub agent_controller: String,

    /// CPU request of the agent container.
    #[arg(long, env = "TRITON_WEBHOOK_AGENT_CPU_REQUEST", default_value_t = AgentSettings::default().cpu_request)]
    pub agent_cpu_request: String,

    /// Memory request of the agent container.
    #[arg(long, env = "TRITON_WEBHOOK_AGENT_MEMORY_REQUEST", default_value_t = AgentSettings::default().memory_request)]
    pub agent_memory_request: String,

    /// CPU limit of the agent container.
    #[arg(long, env = "TRITON_WEBHOOK_AGENT_CPU_LIMIT", default_value_t = AgentSettings::default().cpu_limit)]
    pub agent_cpu_limit: String,

    /// Memory limit of the agent container.
    #[arg(long, env = "TRITON_WEBHOOK_AGENT_MEMORY_LIMIT", default_value_t = AgentSettings::default().memory_limit)]
    pub agent_memory_limit: String,

    /// Lifetime of the agent's projected service-account token, in seconds (at least 600).
    #[arg(long, env = "TRITON_WEBHOOK_AGENT_TOKEN_EXPIRATION", default_value_t = AgentSettings::default().token_expiration_seconds,
          value_parser = clap::value_parser!(i64).range(600..))]
    pub agent_token_expiration: i64,
}

/// An address, or none ("off").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    match s {
        "off" | "" => Ok(OptionalAddr(None)),
        _ => s
            .parse()
            .map(|a| OptionalAddr(Some(a)))
            .map_err(|e| format!("{e}: expected host:port or \"off\"")),
    }
}

/// A duration for a timeout: humantime (`10s`, `1m30s`, `500ms`), more than zero.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 10s, 1m30s, 500ms)"))?;
    if d.is_zero() {
        return Err("a timeout must be longer than 0".into());
    }
    Ok(d)
}

impl Args {
    /// The readiness-agent injection settings, or `None` when the agent is not enabled.
    pub fn agent(&self) -> Option<AgentSettings> {
        self.enable_agent.then(|| AgentSettings {
            image: self.agent_image.clone(),
            controller_address: self.agent_controller.clone(),
            cpu_request: self.agent_cpu_request.clone(),
            memory_request: self.agent_memory_request.clone(),
            cpu_limit: self.agent_cpu_limit.clone(),
            memory_limit: self.agent_memory_limit.clone(),
            token_expiration_seconds: self.agent_token_expiration,
        })
    }

    /// What one client may hold: timeouts, connection cap, body size.
    pub fn limits(&self) -> Limits {
        Limits {
            tls_handshake_timeout: self.tls_handshake_timeout,
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_parse_and_admin_can_be_switched_off() {
        let args = Args::try_parse_from(["triton-webhook"]).unwrap();
        assert_eq!(args.listen.port(), 8443);
        assert_eq!(
            args.admin_listen,
            OptionalAddr(Some("0.0.0.0:9090".parse().unwrap()))
        );
        let args = Args::try_parse_from(["triton-webhook", "--admin-listen", "off"]).unwrap();
        assert_eq!(args.admin_listen, OptionalAddr(None));
    }

    #[test]
    fn the_agent_is_on_unless_disabled_by_flag_or_environment() {
        let args = Args::try_parse_from(["triton-webhook"]).unwrap();
        assert_eq!(args.agent(), Some(AgentSettings::default()));
        let args = Args::try_parse_from(["triton-webhook", "--enable-agent"]).unwrap();
        assert_eq!(args.agent(), Some(AgentSettings::default()));
        let args = Args::try_parse_from(["triton-webhook", "--enable-agent=false"]).unwrap();
        assert_eq!(args.agent(), None);
        // The environment fallback, as clap reads it (not set process-wide: tests run in
        // parallel).
        let cmd = Args::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == "enable_agent")
            .unwrap();
        assert_eq!(
            arg.get_env(),
            Some(std::ffi::OsStr::new("TRITON_WEBHOOK_ENABLE_AGENT"))
        );
    }

    #[test]
    fn limits_default_to_bounded_values_and_can_be_set() {
        let limits = Args::try_parse_from(["triton-webhook"]).unwrap().limits();
        assert_eq!(limits, Limits::default());
        assert_eq!(limits.tls_handshake_timeout, Duration::from_secs(10));
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.body_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Duration::from_secs(90));
        assert_eq!(limits.max_connections, 1024);
        let limits = Args::try_parse_from([
            "triton-webhook",
            "--header-read-timeout=2s",
            "--idle-timeout=1m30s",
            "--max-connections=8",
        ])
        .unwrap()
        .limits();
        assert_eq!(limits.header_read_timeout, Duration::from_secs(2));
        assert_eq!(limits.idle_timeout, Duration::from_secs(90));
        assert_eq!(limits.max_connections, 8);
    }

    #[test]
    fn zero_or_malformed_timeouts_and_a_zero_connection_cap_are_refused() {
        for (flag, value) in [
            ("--header-read-timeout", "0s"),
            ("--idle-timeout", "soon"),
            ("--tls-handshake-timeout", "10"),
            ("--max-connections", "0"),
        ] {
            let err = Args::try_parse_from(["triton-webhook", flag, value]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
        }
    }
}
