//! The agent's footprint, measured: builds the shipping binary (`--profile agent`), prints its
//! size, runs it for 60 s probing a local HTTP server every second and reporting to a local stub
//! of the controller's agent service, and prints its memory (VmRSS, VmHWM) and CPU time
//! (utime + stime, and each thread's on-CPU time from schedstat) from /proc.
//!
//!   cargo run --release -p triton-agent --example footprint -- [--seconds 60] [--period 1s]
//!       [--profile agent|release] [--controller-host 127.0.0.1] [--no-build]
//!
//! `--no-build` measures the binary already built for the profile.
//!
//! The measured window starts once the first report has arrived (start-up excluded); the probes
//! and reports the servers saw in it are counted, so a stalled agent cannot pass as a thrifty
//! one. For scale, the same window also measures the floor: a process doing nothing but the same
//! GET with blocking std calls every period (on a VM, waking a process with cold caches costs
//! more CPU than the probe itself).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use triton_proto::agent::agent_server::{Agent, AgentServer};
use triton_proto::agent::{HealthReport, ReportReply};

const USAGE: &str = "usage: footprint [--seconds N] [--period DURATION] [--profile agent|release] \
                     [--controller-host HOST] [--no-build]";

struct Opts {
    seconds: u64,
    period: String,
    profile: String,
    /// The host in the controller's address: a name (`localhost`) makes the agent resolve it
    /// through libc, as a pod does for the controller's Service.
    controller_host: String,
    no_build: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        seconds: 60,
        period: "1s".into(),
        profile: "agent".into(),
        controller_host: "127.0.0.1".into(),
        no_build: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--no-build" {
            o.no_build = true;
            continue;
        }
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{arg} needs a value; {USAGE}"));
        match arg.as_str() {
            "--seconds" => o.seconds = value.parse().unwrap_or_else(|_| panic!("{USAGE}")),
            "--period" => o.period = value,
            "--profile" => o.profile = value,
            "--controller-host" => o.controller_host = value,
            _ => panic!("unknown argument {arg}; {USAGE}"),
        }
    }
    o
}

#[derive(Default)]
struct Counters {
    probes: AtomicU64,
    reports: AtomicU64,
}

struct Stub(Arc<Counters>);

#[tonic::async_trait]
impl Agent for Stub {
    async fn report(
        &self,
        request: tonic::Request<HealthReport>,
    ) -> Result<tonic::Response<ReportReply>, tonic::Status> {
        assert!(request.get_ref().healthy, "the app always answers 200");
        self.0.reports.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ReportReply::default()))
    }
}

/// Answers every request with 200 and closes, as a small health endpoint does.
async fn app(listener: TcpListener, counters: Arc<Counters>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0; 512];
            while !request.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            if request.starts_with(b"GET /healthz ") {
                counters.probes.fetch_add(1, Ordering::Relaxed);
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
        });
    }
}

/// The floor (`footprint --floor PORT PERIOD`): the same GET with blocking std calls, forever.
fn floor(port: u16, period: Duration) -> ! {
    let mut buf = [0; 512];
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ =
                s.write_all(b"GET /floor HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            let _ = s.read(&mut buf);
        }
        std::thread::sleep(period);
    }
}

/// utime + stime.
fn cpu(pid: u32) -> Duration {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc/PID/stat");
    // The fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / hz)
}

/// On-CPU time per thread (name, schedstat nanoseconds).
fn threads_cpu(pid: u32) -> Vec<(String, Duration)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<_> = tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm"))
                .ok()?
                .trim()
                .to_string();
            let ns = std::fs::read_to_string(dir.join("schedstat")).ok()?;
            let ns: u64 = ns.split(' ').next()?.parse().ok()?;
            Some((name, Duration::from_nanos(ns)))
        })
        .collect();
    out.sort();
    out
}

/// Each thread's on-CPU time since `before`.
fn on_cpu_since(
    before: &[(String, Duration)],
    now: Vec<(String, Duration)>,
) -> Vec<(String, Duration)> {
    now.into_iter()
        .map(|(name, d)| {
            let b = before
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(Duration::ZERO, |(_, b)| *b);
            (name, d.saturating_sub(b))
        })
        .collect()
}

/// A `/proc/PID/status` number (KiB for the Vm* and Rss* fields).
fn status(pid: u32, field: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Builds the agent for `profile` (unless `no_build`) and returns its path.
fn build(profile: &str, no_build: bool) -> PathBuf {
    if !no_build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--profile",
                profile,
                "-p",
                "triton-agent",
                "--bin",
                "triton-agent",
            ])
            .status()
            .expect("running cargo build");
        assert!(
            status.success(),
            "cargo build --profile {profile} -p triton-agent failed"
        );
    }
    // target/release/examples/footprint → target/<profile>/triton-agent
    let exe = std::env::current_exe().expect("locating the footprint example");
    let target = exe.ancestors().nth(3).expect("the target directory");
    target.join(profile).join("triton-agent")
}

/// The size after `strip` (of a copy), to show the binary is stripped already.
fn stripped_size(binary: &Path) -> Option<u64> {
    let copy = std::env::temp_dir().join(format!("triton-agent-stripped-{}", std::process::id()));
    std::fs::copy(binary, &copy).ok()?;
    let ok = Command::new("strip").arg(&copy).status().ok()?.success();
    let size = std::fs::metadata(&copy).ok().map(|m| m.len());
    let _ = std::fs::remove_file(&copy);
    ok.then_some(size?)
}

fn stop(mut child: Child, name: &str) {
    let term = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("waiting for a child");
    println!(
        "{name:<11} exited {status} {:?} after SIGTERM",
        term.elapsed()
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--floor") {
        let port = args
            .next()
            .and_then(|p| p.parse().ok())
            .expect("--floor PORT PERIOD");
        let period = humantime::parse_duration(&args.next().expect("--floor PORT PERIOD")).unwrap();
        floor(port, period);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(measure(opts()));
}

async fn measure(o: Opts) {
    let binary = build(&o.profile, o.no_build);
    let size = std::fs::metadata(&binary).expect("the built binary").len();
    println!(
        "binary      {} ({size} bytes) {}",
        mib(size),
        binary.display()
    );
    if let Some(stripped) = stripped_size(&binary) {
        println!("  stripped  {} ({stripped} bytes)", mib(stripped));
    }

    let counters = Arc::new(Counters::default());
    let app_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_port = app_listener.local_addr().unwrap().port();
    tokio::spawn(app(app_listener, counters.clone()));
    let controller = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let controller_port = controller.local_addr().unwrap().port();
    tokio::spawn(
        Server::builder()
            .add_service(AgentServer::new(Stub(counters.clone())))
            .serve_with_incoming(TcpIncoming::from(controller)),
    );
    let dir = std::env::temp_dir().join(format!("triton-agent-footprint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "footprint-token").unwrap();

    let mut agent = Command::new(&binary)
        .args(["--target", &format!("http://:{app_port}/healthz")])
        .args([
            "--controller",
            &format!("http://{}:{controller_port}", o.controller_host),
        ])
        .args(["--period", &o.period])
        .arg("--token-file")
        .arg(&token)
        .env("POD_NAME", "footprint-0")
        .env("POD_NAMESPACE", "default")
        .env("POD_UID", "00000000-0000-0000-0000-000000000000")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("starting triton-agent");
    let floor = Command::new(std::env::current_exe().unwrap())
        .args(["--floor", &app_port.to_string(), &o.period])
        .spawn()
        .expect("starting the floor");
    let (pid, floor_pid) = (agent.id(), floor.id());

    let started = Instant::now();
    while counters.reports.load(Ordering::Relaxed) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no report from the agent within 10 s"
        );
        if let Some(status) = agent.try_wait().unwrap() {
            panic!("triton-agent exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("first report {:?} after start", started.elapsed());

    let (cpu0, floor0) = (cpu(pid), cpu(floor_pid));
    let (threads0, floor_threads0) = (threads_cpu(pid), threads_cpu(floor_pid));
    let (probes0, reports0) = (
        counters.probes.load(Ordering::Relaxed),
        counters.reports.load(Ordering::Relaxed),
    );
    let window = Instant::now();
    let mut rss_max = 0;
    for _ in 0..o.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_max = rss_max.max(status(pid, "VmRSS"));
    }
    let elapsed = window.elapsed().as_secs_f64();
    let (cpu_time, floor_time) = (cpu(pid) - cpu0, cpu(floor_pid) - floor0);
    let threads = on_cpu_since(&threads0, threads_cpu(pid));
    let floor_threads = on_cpu_since(&floor_threads0, threads_cpu(floor_pid));
    let probes = counters.probes.load(Ordering::Relaxed) - probes0;
    let reports = counters.reports.load(Ordering::Relaxed) - reports0;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let percent = |d: Duration| 100.0 * d.as_secs_f64() / elapsed;
    let total = |threads: &[(String, Duration)]| threads.iter().map(|(_, d)| *d).sum::<Duration>();

    println!("window      {elapsed:.1} s, probing every {}", o.period);
    println!("probes      {probes} answered by the app");
    println!("reports     {reports} taken by the stub controller (heartbeats)");
    println!(
        "memory      VmRSS {} KiB (max {rss_max} KiB over 1 s samples; RssAnon {} KiB, RssFile {} KiB), VmHWM {} KiB",
        status(pid, "VmRSS"),
        status(pid, "RssAnon"),
        status(pid, "RssFile"),
        status(pid, "VmHWM"),
    );
    println!(
        "cpu         utime+stime {:.2} s = {:.2} % of one core; on-CPU (schedstat) {:.1} ms = {:.2} %, {:.2} ms per probe",
        cpu_time.as_secs_f64(),
        percent(cpu_time),
        ms(total(&threads)),
        percent(total(&threads)),
        ms(total(&threads)) / probes.max(1) as f64,
    );
    let per_thread: Vec<String> = threads
        .iter()
        .map(|(name, d)| format!("{name} {:.1} ms", ms(*d)))
        .collect();
    println!("  threads   {}", per_thread.join(", "));
    println!(
        "  floor     utime+stime {:.2} s; on-CPU {:.1} ms = {:.2} % (a blocking std GET every {})",
        floor_time.as_secs_f64(),
        ms(total(&floor_threads)),
        percent(total(&floor_threads)),
        o.period,
    );
    stop(agent, "triton-agent");
    stop(floor, "floor");
    let _ = std::fs::remove_dir_all(&dir);
}
