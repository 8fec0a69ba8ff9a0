//! The steady probe loop allocates nothing: counted by a global allocator that counts on the
//! probing thread only (the application server runs on its own thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use triton_agent::Probes;
use triton_agent::probe::Prober;
use triton_agent::report::Snapshot;
use triton_agent::verdict::{Thresholds, Verdict};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// A blocking HTTP server on its own thread, answering `status` to every request.
fn app(status: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
        for stream in listener.incoming() {
            let mut s = stream.unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 512];
            while !request.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(answer.as_bytes());
        }
    });
    port
}

/// Allocations over 100 probes after 10 of warm-up: probe, verdict, snapshot published in place.
/// (110 connections in all fit the app's listen backlog of 128: a TCP probe does not wait for
/// the app to accept.)
fn steady_allocations(target: &str, reason: &str) -> u64 {
    let mut probes = Probes {
        prober: Prober::new(target.parse().unwrap(), Duration::from_secs(5)),
        verdict: Verdict::new(
            Thresholds {
                success: 1,
                failure: 3,
            },
            SystemTime::now(),
        ),
    };
    let (verdicts, seen) = watch::channel(Snapshot::initial(SystemTime::now()));
    for _ in 0..10 {
        probes.probe_and_publish(&verdicts);
    }
    assert_eq!(seen.borrow().reason, reason);
    let before = allocations();
    for _ in 0..100 {
        probes.probe_and_publish(&verdicts);
    }
    allocations() - before
}

#[test]
fn a_healthy_http_probe_allocates_nothing() {
    let port = app(200);
    assert_eq!(
        steady_allocations(&format!("http://:{port}/healthz"), "ProbeSucceeded"),
        0
    );
}

#[test]
fn a_failing_http_probe_allocates_nothing() {
    let port = app(503);
    assert_eq!(
        steady_allocations(&format!("http://:{port}/healthz"), "HTTPStatus"),
        0
    );
}

#[test]
fn a_tcp_probe_allocates_nothing() {
    let port = app(200);
    assert_eq!(
        steady_allocations(&format!("tcp://127.0.0.1:{port}"), "ProbeSucceeded"),
        0
    );
}

#[test]
fn a_refused_probe_allocates_nothing() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert_eq!(
        steady_allocations(&format!("http://:{port}/"), "ConnectionRefused"),
        0
    );
}
