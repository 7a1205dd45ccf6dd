//! Starts `rocmforge_cli serve` on the real stories260K model and drives it: the Python suite in
//! tests/server/ (official `openai` client + raw HTTP) and a graceful-shutdown test.
//!
//! Skips with a printed reason when ../shared or the Python packages are missing, except when
//! the environment variable CI is set, where a missing Python package is a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn shared_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let from_env = std::env::var_os("ROCMFORGE_SHARED").map(PathBuf::from);
    from_env
        .into_iter()
        .chain(["../shared", "../../shared"].iter().map(|p| root.join(p)))
        .find(|p| p.join("models/stories260K.gguf").is_file())
}

fn model_path() -> Option<PathBuf> {
    match shared_dir() {
        Some(d) => Some(d.join("models/stories260K.gguf")),
        None => {
            println!("skipped: ../shared/models/stories260K.gguf not found");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A running server, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_rocmforge_cli"))
            .arg("serve")
            .arg("--gguf")
            .arg(model)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--device",
                "cpu",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start rocmforge_cli serve");
        let mut s = Server { child, port };
        s.wait_healthy();
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_healthy(&mut self) {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("server exited during startup: {st}");
            }
            if let Some((200, _)) = http(self.port, "GET", "/health", "") {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "server not healthy after 120 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((status, body))
}

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import openai, pytest, requests"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but python3 with openai, pytest and requests is missing"
        );
        println!("skipped: python3 with openai, pytest and requests not found (pip install openai pytest requests)");
    }
    ok
}

#[test]
fn openai_client_suite() {
    let Some(model) = model_path() else { return };
    if !python_ready() {
        return;
    }
    let main = Server::start(
        &model,
        &[
            "--parallel",
            "64",
            "--ctx-size",
            "512",
            "--queue-size",
            "256",
        ],
    );
    let small = Server::start(
        &model,
        &["--parallel", "1", "--ctx-size", "512", "--queue-size", "1"],
    );
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/server/test_openai.py");
    let status = Command::new("python3")
        .args(["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"])
        .arg(&suite)
        .env("ROCMFORGE_URL", main.url())
        .env("ROCMFORGE_SMALL_URL", small.url())
        .status()
        .expect("cannot run pytest");
    assert!(status.success(), "the Python server suite failed");
}

/// SIGTERM while a request streams: the request completes with [DONE], new connections are
/// refused, the process exits 0.
#[test]
fn sigterm_drains_running_requests_then_exits() {
    let Some(model) = model_path() else { return };
    let mut server = Server::start(&model, &["--parallel", "2", "--ctx-size", "512"]);
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body =
        r#"{"prompt": "Once upon a time", "max_tokens": 300, "temperature": 0, "stream": true}"#;
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    // Wait for the first event, then signal.
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "stream ended early");
        if line.starts_with("data: ") {
            break;
        }
    }
    let kill = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("\"finish_reason\":\"length\""),
        "the running request did not finish"
    );
    assert!(rest.trim_end().ends_with("data: [DONE]\n\n0") || rest.contains("data: [DONE]"));
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    assert!(
        http(server.port, "GET", "/health", "").is_none(),
        "still accepting after exit"
    );
}
