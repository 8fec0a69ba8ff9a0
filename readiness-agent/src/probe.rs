//! One probe of the target: a TCP connect, or an HTTP/1.1 GET whose status line decides.
//!
//! Hand-rolled rather than an HTTP client, and blocking: the agent probes on a thread of its own
//! (see `run`), so a probe is a handful of plain syscalls and one wake-up of that thread, with no
//! allocation at all for an IP or empty host. The request is built once and the answer read into
//! one reused buffer; only its status line is parsed. Every step is bounded by the probe's
//! deadline.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::target::{Kind, Target};

/// Bytes read for the status line; `HTTP/1.1 200 ` needs 13.
const BUFFER: usize = 512;
/// The longest label kept in messages (the controller refuses reports with messages over 4 KiB;
/// a path can be longer than that).
const MAX_LABEL: usize = 1024;

/// What a probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// TCP: connected.
    Connected,
    /// HTTP: the status code of the answer.
    Status(u16),
    Refused,
    /// Reset or aborted by the peer.
    Reset,
    /// No answer within the probe timeout.
    Timeout,
    /// HTTP: the connection closed before a status line.
    Closed,
    /// HTTP: the answer does not start with an HTTP/1.x status line.
    BadResponse,
    /// The host name did not resolve.
    Unresolved,
    /// Any other socket error.
    Failed(io::ErrorKind),
}

impl Outcome {
    /// Healthy: connected, or an HTTP status from 200 to 399.
    pub fn success(self) -> bool {
        match self {
            Outcome::Connected => true,
            Outcome::Status(code) => (200..400).contains(&code),
            _ => false,
        }
    }

    /// The CamelCase reason reported to the controller.
    pub fn reason(self) -> &'static str {
        match self {
            o if o.success() => "ProbeSucceeded",
            Outcome::Status(_) => "HTTPStatus",
            Outcome::Refused => "ConnectionRefused",
            Outcome::Reset => "ConnectionReset",
            Outcome::Timeout => "Timeout",
            Outcome::Closed => "NoResponse",
            Outcome::BadResponse => "BadResponse",
            Outcome::Unresolved => "HostUnresolved",
            Outcome::Connected | Outcome::Failed(_) => "ProbeFailed",
        }
    }

    fn of_error(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Outcome::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Outcome::Reset,
            // A read or write timeout (EAGAIN on Linux).
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Outcome::Timeout,
            kind => Outcome::Failed(kind),
        }
    }
}

/// The start of an HTTP answer, as far as it has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusLine {
    /// So far a valid prefix; read more.
    Incomplete,
    Status(u16),
    Invalid,
}

/// Parses the status code from the start of an HTTP/1.x answer: `HTTP/1.<d> <ddd>` followed by a
/// space or the line end (the reason phrase is optional and ignored).
pub fn parse_status_line(buf: &[u8]) -> StatusLine {
    const PREFIX: &[u8] = b"HTTP/1.";
    let head = &buf[..buf.len().min(PREFIX.len())];
    if head != &PREFIX[..head.len()] {
        return StatusLine::Invalid;
    }
    // "HTTP/1.1 200" and the byte after the code.
    let Some(line) = buf.get(..13) else {
        return StatusLine::Incomplete;
    };
    let digits = &line[9..12];
    if !line[7].is_ascii_digit()
        || line[8] != b' '
        || !digits.iter().all(u8::is_ascii_digit)
        || !matches!(line[12], b' ' | b'\r' | b'\n')
    {
        return StatusLine::Invalid;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if code < 100 {
        return StatusLine::Invalid;
    }
    StatusLine::Status(code)
}

/// Probes one target again and again with the same buffers.
pub struct Prober {
    target: Target,
    timeout: Duration,
    /// The address when no DNS look-up is needed (empty host or IP literal).
    addr: Option<SocketAddr>,
    /// The whole HTTP request (empty for TCP).
    request: Box<[u8]>,
    buf: Box<[u8]>,
    /// "GET http://127.0.0.1:8080/healthz" or "connect tcp://127.0.0.1:5432", at most
    /// [`MAX_LABEL`] bytes.
    label: Box<str>,
}

impl Prober {
    pub fn new(target: Target, timeout: Duration) -> Self {
        let authority = target.authority();
        let (request, label) = match &target.kind {
            Kind::Http { path } => (
                format!(
                    "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: triton-agent/{}\r\n\
                     Accept: */*\r\nConnection: close\r\n\r\n",
                    env!("CARGO_PKG_VERSION")
                )
                .into_bytes(),
                format!("GET http://{authority}{path}"),
            ),
            Kind::Tcp => (Vec::new(), format!("connect tcp://{authority}")),
        };
        let mut label = label;
        if label.len() > MAX_LABEL {
            let cut = (0..=MAX_LABEL - 3)
                .rev()
                .find(|i| label.is_char_boundary(*i))
                .unwrap_or(0);
            label.truncate(cut);
            label.push('…');
        }
        Self {
            addr: target.socket_addr(),
            target,
            timeout,
            request: request.into(),
            buf: vec![0; BUFFER].into(),
            label: label.into(),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// One probe, bounded by the timeout (but for a host name's DNS look-up, which is the
    /// resolver's).
    pub fn probe(&mut self) -> Outcome {
        let deadline = Instant::now() + self.timeout;
        match self.attempt(deadline) {
            Ok(outcome) => outcome,
            Err(e) => Outcome::of_error(&e),
        }
    }

    fn connect(&self, deadline: Instant) -> Result<TcpStream, Outcome> {
        if let Some(addr) = self.addr {
            return TcpStream::connect_timeout(&addr, remaining(deadline)?)
                .map_err(|e| Outcome::of_error(&e));
        }
        let addrs = (self.target.host_name(), self.target.port)
            .to_socket_addrs()
            .map_err(|_| Outcome::Unresolved)?;
        // Each address in turn (a name may resolve to ::1 before 127.0.0.1).
        let mut last = Outcome::Unresolved;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, remaining(deadline)?) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Outcome::of_error(&e),
            }
        }
        Err(last)
    }

    fn attempt(&mut self, deadline: Instant) -> io::Result<Outcome> {
        let mut stream = match self.connect(deadline) {
            Ok(stream) => stream,
            Err(outcome) => return Ok(outcome),
        };
        if self.request.is_empty() {
            return Ok(Outcome::Connected);
        }
        let Ok(left) = remaining(deadline) else {
            return Ok(Outcome::Timeout);
        };
        stream.set_write_timeout(Some(left))?;
        stream.write_all(&self.request)?;
        let mut filled = 0;
        let code = loop {
            let Ok(left) = remaining(deadline) else {
                return Ok(Outcome::Timeout);
            };
            stream.set_read_timeout(Some(left))?;
            match stream.read(&mut self.buf[filled..])? {
                0 if filled == 0 => return Ok(Outcome::Closed),
                0 => return Ok(Outcome::BadResponse),
                n => filled += n,
            }
            match parse_status_line(&self.buf[..filled]) {
                StatusLine::Status(code) => break code,
                StatusLine::Invalid => return Ok(Outcome::BadResponse),
                // The buffer holds far more than a status line needs.
                StatusLine::Incomplete => {}
            }
        };
        // Consume what has already arrived without waiting, so that closing a connection with
        // unread data does not reset it under a server that is still writing.
        if stream.set_nonblocking(true).is_ok() {
            while let Ok(1..) = stream.read(&mut self.buf) {}
        }
        Ok(Outcome::Status(code))
    }

    /// Writes what a probe saw, e.g. `GET http://127.0.0.1:8080/healthz: 503`, into `out`
    /// (cleared first; no allocation once `out` is large enough).
    pub fn describe(&self, outcome: Outcome, out: &mut String) {
        out.clear();
        out.push_str(&self.label);
        out.push_str(": ");
        // Writing to a String cannot fail.
        let _ = match outcome {
            Outcome::Connected => write!(out, "connected"),
            Outcome::Status(code) => write!(out, "{code}"),
            Outcome::Refused => write!(out, "connection refused"),
            Outcome::Reset => write!(out, "connection reset"),
            Outcome::Timeout => write!(out, "no answer within {:?}", self.timeout),
            Outcome::Closed => write!(out, "connection closed without an answer"),
            Outcome::BadResponse => write!(out, "not an HTTP/1.x answer"),
            Outcome::Unresolved => write!(out, "host name not found"),
            Outcome::Failed(kind) => write!(out, "{kind}"),
        };
    }
}

/// The time left before `deadline`, or a timeout when there is none.
fn remaining(deadline: Instant) -> Result<Duration, Outcome> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => Err(Outcome::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;
    /// An HTTP server on 127.0.0.1, on its own thread, answering every connection with
    /// `answer` and handing back the requests it read.
    fn http_server(answer: &'static [u8]) -> (u16, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let mut s = s.unwrap();
                let mut request = Vec::new();
                let mut buf = [0; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(answer);
                let _ = tx.send(String::from_utf8(request).unwrap());
            }
        });
        (port, rx)
    }

    fn prober(target: &str) -> Prober {
        Prober::new(target.parse().unwrap(), Duration::from_secs(5))
    }

    fn described(p: &Prober, o: Outcome) -> String {
        let mut s = String::new();
        p.describe(o, &mut s);
        s
    }

    #[test]
    fn http_probe_sends_a_get_and_reads_the_status() {
        let (port, requests) =
            http_server(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nnope");
        let mut p = prober(&format!("http://:{port}/healthz?x=1"));
        let outcome = p.probe();
        assert_eq!(outcome, Outcome::Status(503));
        assert_eq!(
            described(&p, outcome),
            format!("GET http://127.0.0.1:{port}/healthz?x=1: 503")
        );
        let request = requests.recv().unwrap();
        assert!(
            request.starts_with(&format!(
                "GET /healthz?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            )),
            "{request}"
        );
        assert!(request.contains("Connection: close\r\n"), "{request}");
    }

    #[test]
    fn http_probe_is_healthy_on_200_and_reuses_its_buffers() {
        let (port, _requests) = http_server(b"HTTP/1.1 200 OK\r\n\r\n");
        let mut p = prober(&format!("http://:{port}/"));
        let buf = p.buf.as_ptr();
        for _ in 0..3 {
            assert_eq!(p.probe(), Outcome::Status(200));
        }
        assert_eq!(p.buf.as_ptr(), buf);
    }

    #[test]
    fn a_server_that_is_not_http_is_a_bad_response() {
        let (port, _requests) = http_server(b"SSH-2.0-OpenSSH_9.6\r\n");
        let mut p = prober(&format!("http://:{port}/"));
        assert_eq!(p.probe(), Outcome::BadResponse);
    }

    #[test]
    fn a_closed_port_is_refused() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        for target in [format!("http://:{port}/"), format!("tcp://:{port}")] {
            let mut p = prober(&target);
            let outcome = p.probe();
            assert_eq!(outcome, Outcome::Refused, "{target}");
            assert!(described(&p, outcome).ends_with(": connection refused"));
        }
    }

    #[test]
    fn tcp_probe_connects() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut p = prober(&format!("tcp://127.0.0.1:{port}"));
        let outcome = p.probe();
        assert_eq!(outcome, Outcome::Connected);
        assert_eq!(
            described(&p, outcome),
            format!("connect tcp://127.0.0.1:{port}: connected")
        );
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        // Accepted by the kernel (backlog) but never read or answered.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut p = Prober::new(
            format!("http://:{port}/").parse().unwrap(),
            Duration::from_millis(100),
        );
        let outcome = p.probe();
        assert_eq!(outcome, Outcome::Timeout);
        assert!(described(&p, outcome).ends_with(": no answer within 100ms"));
        drop(listener);
    }

    #[test]
    fn a_long_path_is_cut_short_in_messages() {
        let path = "/é".repeat(1000);
        let p = prober(&format!("http://:8080{path}"));
        let message = described(&p, Outcome::Status(200));
        assert!(message.len() <= MAX_LABEL + 8, "{} bytes", message.len());
        assert!(
            message.starts_with("GET http://127.0.0.1:8080/é/é"),
            "{message}"
        );
        assert!(message.ends_with("…: 200"), "{message}");
    }

    #[test]
    fn a_host_name_is_resolved() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut p = prober(&format!("tcp://localhost:{port}"));
        assert_eq!(p.probe(), Outcome::Connected);
    }
}
