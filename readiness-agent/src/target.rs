//! The probe target: `http://[host]:port[/path]` or `tcp://[host]:port`, the value of the pod
//! annotation `apps.triton.io/agent` (the webhook checks it with the same rules at admission).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// What to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    /// As written, brackets kept for IPv6; empty means the pod itself (`127.0.0.1`).
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// HTTP GET of the path (with its query, if any); 2xx and 3xx are healthy.
    Http { path: String },
    /// A TCP connect; connected is healthy.
    Tcp,
}

/// A target that cannot be parsed, with the reason and the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{why} (got {value:?}; expected http://[host]:port[/path] or tcp://[host]:port, e.g. http://:8080/healthz)"
)]
pub struct TargetError {
    why: &'static str,
    value: String,
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(value: &str) -> Result<Self, TargetError> {
        let bad = |why| TargetError {
            why,
            value: value.into(),
        };
        let (scheme, rest) = value
            .split_once("://")
            .ok_or_else(|| bad("missing scheme"))?;
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("missing port"))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("port is not a number from 1 to 65535"))?;
        let host_ok = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
        if !host_ok {
            return Err(bad("host has characters a host name cannot have"));
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(bad("an IPv6 host must be in brackets"));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("path has white space or control characters"));
        }
        let kind = match scheme {
            "http" => Kind::Http {
                path: if path.is_empty() { "/" } else { path }.into(),
            },
            "tcp" if path.is_empty() || path == "/" => Kind::Tcp,
            "tcp" => return Err(bad("a tcp target has no path")),
            _ => return Err(bad("scheme must be http or tcp")),
        };
        Ok(Target {
            kind,
            host: host.into(),
            port,
        })
    }
}

impl Target {
    /// The address to connect to without a DNS look-up: an empty host or an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip = match self.host.as_str() {
            "" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            h => h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()?,
        };
        Some(SocketAddr::new(ip, self.port))
    }

    /// The host to resolve when it is a name (brackets removed).
    pub fn host_name(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// `host:port` as connected to (`127.0.0.1` for an empty host): the HTTP `Host` header and
    /// the address in probe messages.
    pub fn authority(&self) -> String {
        match self.host.as_str() {
            "" => format!("127.0.0.1:{}", self.port),
            h => format!("{h}:{}", self.port),
        }
    }
}

/// The target as written (host empty when it was).
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Http { path } => write!(f, "http://{}:{}{path}", self.host, self.port),
            Kind::Tcp => write!(f, "tcp://{}:{}", self.host, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(host: &str, port: u16, path: &str) -> Target {
        Target {
            kind: Kind::Http { path: path.into() },
            host: host.into(),
            port,
        }
    }

    #[test]
    fn http_target_with_empty_host_probes_the_pod_itself() {
        let t: Target = "http://:8080/healthz".parse().unwrap();
        assert_eq!(t, http("", 8080, "/healthz"));
        assert_eq!(t.socket_addr(), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(t.authority(), "127.0.0.1:8080");
        assert_eq!(t.to_string(), "http://:8080/healthz");
    }

    #[test]
    fn http_target_without_path_gets_the_root_and_keeps_a_query() {
        assert_eq!("http://:80".parse(), Ok(http("", 80, "/")));
        assert_eq!(
            "http://:80/ready?full=1".parse(),
            Ok(http("", 80, "/ready?full=1"))
        );
    }

    #[test]
    fn explicit_hosts_are_kept_and_only_ip_literals_skip_dns() {
        let named: Target = "http://localhost:8080/h".parse().unwrap();
        assert_eq!(named.host, "localhost");
        assert_eq!(named.socket_addr(), None);
        assert_eq!(named.authority(), "localhost:8080");
        let v6: Target = "tcp://[::1]:5432".parse().unwrap();
        assert_eq!(v6.kind, Kind::Tcp);
        assert_eq!(v6.socket_addr(), Some("[::1]:5432".parse().unwrap()));
        assert_eq!(v6.host_name(), "::1");
        let v4: Target = "tcp://10.0.0.7:6379".parse().unwrap();
        assert_eq!(v4.socket_addr(), Some("10.0.0.7:6379".parse().unwrap()));
    }

    #[test]
    fn tcp_target_parses_and_refuses_a_path() {
        let t: Target = "tcp://:5432".parse().unwrap();
        assert_eq!((t.kind, t.port), (Kind::Tcp, 5432));
        assert!("tcp://:5432/".parse::<Target>().is_ok());
        let err = "tcp://:5432/x".parse::<Target>().unwrap_err();
        assert!(
            err.to_string().starts_with("a tcp target has no path"),
            "{err}"
        );
    }

    #[test]
    fn malformed_targets_are_refused_with_the_reason_and_the_forms() {
        for (value, why) in [
            ("8080", "missing scheme"),
            ("http://localhost/healthz", "missing port"),
            ("http://:0/", "port is not a number"),
            ("http://:65536/", "port is not a number"),
            ("http://:http/", "port is not a number"),
            ("http://a_b:80/", "host has characters"),
            ("http://::1:80/", "an IPv6 host must be in brackets"),
            ("http://:80/a b", "path has white space"),
            ("gopher://:70", "scheme must be http or tcp"),
            ("https://:443/", "scheme must be http or tcp"),
        ] {
            let err = value.parse::<Target>().unwrap_err().to_string();
            assert!(err.starts_with(why), "{value}: {err}");
            assert!(err.contains(&format!("{value:?}")), "{value}: {err}");
            assert!(err.contains("http://:8080/healthz"), "{value}: {err}");
        }
    }
}
