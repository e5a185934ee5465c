//! Helpers shared by the tests that run the real `keytrap` binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_keytrap");

/// `KEYTRAP_TEST_POSTGRES_URL`, the PostgreSQL server the PostgreSQL tests use. Unset,
/// the test is skipped (said on stderr), except under `CI`, where that is a failure:
/// PostgreSQL coverage must never silently vanish.
pub fn postgres_url() -> Option<String> {
    let Ok(url) = std::env::var("KEYTRAP_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "KEYTRAP_TEST_POSTGRES_URL must be set in CI"
        );
        eprintln!("SKIPPED: PostgreSQL test (KEYTRAP_TEST_POSTGRES_URL is not set)");
        return None;
    };
    Some(url)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("keytrap-e2e-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct Server {
    pub child: Child,
    pub api: String,
    pub trap: String,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

pub fn collect(r: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    lines
}

pub fn command(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYTRAP_") {
            c.env_remove(k);
        }
    }
    c
}

impl Server {
    pub fn start(dir: &Path, extra: &[(&str, &str)], args: &[&str]) -> Server {
        let (api_port, trap_port) = (free_port(), free_port());
        let mut c = command(dir);
        c.arg("serve")
            .args(args)
            .env("KEYTRAP_API_LISTEN", format!("127.0.0.1:{api_port}"))
            .env("KEYTRAP_TRAP_LISTEN", format!("127.0.0.1:{trap_port}"))
            .env("KEYTRAP_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Server {
            child,
            api: format!("http://127.0.0.1:{api_port}"),
            trap: format!("http://127.0.0.1:{trap_port}"),
            stdout,
            stderr,
        }
    }

    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.api)).await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "keytrap exited with {status}: {:?}",
                    self.stderr.lock().unwrap()
                );
            }
            assert!(Instant::now() < deadline, "keytrap did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("keytrap did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        self.wait_exit(Duration::from_secs(20))
    }

    /// SIGTERM, then the exit status must be success; if not, the panic shows the status
    /// and the end of the server's log.
    pub fn terminate_cleanly(&mut self) {
        let status = self.terminate();
        if !status.success() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            panic!("keytrap did not exit cleanly after SIGTERM: {status}; last log lines:\n{tail}");
        }
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn logs(&self) -> String {
        std::thread::sleep(Duration::from_millis(200));
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn call(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .request(method, url)
        .header("authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub fn bootstrap_token(s: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = s.stdout();
        if let Some(t) = out.iter().find(|l| l.starts_with("keytrap_")) {
            return t.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no bootstrap token on stdout: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn mint_cli(dir: &Path, api: &str, token: &str, args: &[&str]) -> String {
    let out = command(dir)
        .arg("mint")
        .args(args)
        .env("KEYTRAP_URL", api)
        .env("KEYTRAP_TOKEN", token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keytrap mint {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
