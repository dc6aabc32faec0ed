//! `hearth serve` over a real socket: the official OpenAI Python client
//! against it, a burst of concurrent streaming clients, and a clean stop on
//! SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const MODEL_ID: &str = "smollm2-135m-instruct";

fn model() -> PathBuf {
    let path = hearth_core::hearth_home().join("models/smollm2-135m-instruct/model.gguf");
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    path
}

/// A running `hearth serve`, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    /// Starts the server on a free port with `extra` arguments and waits
    /// for its listening line.
    fn start(extra: &[&str]) -> Server {
        let model = model();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["serve", "--port", "0", "--threads", "2", "--model"])
            .arg(&model)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hearth serve");
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("hearth serve printed no listening line within 60 s");
            }
        };
        let base = line
            .trim()
            .strip_prefix("hearth: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python of the client environment made by scripts/setup-client-venv.sh.
fn client_python() -> PathBuf {
    let python = hearth_core::hearth_home().join("client-venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup-client-venv.sh",
        python.display()
    );
    python
}

#[test]
fn the_official_openai_client_works_unchanged() {
    let key = "sk-hearth-test";
    let server = Server::start(&["--api-key", key]);
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/openai_client_check.py");
    let output = Command::new(client_python())
        .arg(&script)
        .args([
            "--base-url",
            &server.url("/v1"),
            "--model",
            MODEL_ID,
            "--api-key",
            key,
        ])
        .output()
        .expect("run the client check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the client check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// `GET url` as JSON.
fn get_json(url: &str) -> Value {
    let text = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_string()
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url} gave {text:?}: {e}"))
}

/// How one load-test request ended.
enum Outcome {
    Streamed,
    Refused,
}

/// One streaming chat request; `Err` says what was wrong with the answer.
fn stream_once(agent: &ureq::Agent, url: &str, i: usize) -> Result<Outcome, String> {
    let body = json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": format!("Say something about the number {i}.")}],
        "max_tokens": 8,
        "temperature": 0.7,
        "seed": i,
        "stream": true,
    });
    match agent
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
    {
        Ok(response) => {
            let mut text = String::new();
            response
                .into_reader()
                .read_to_string(&mut text)
                .map_err(|e| format!("reading the stream: {e}"))?;
            let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
            if events.last() != Some(&"data: [DONE]") {
                return Err(format!("stream does not end with [DONE]: {text:?}"));
            }
            let mut finished = false;
            for event in &events[..events.len() - 1] {
                let data = event
                    .strip_prefix("data: ")
                    .ok_or_else(|| format!("not a data event: {event:?}"))?;
                let chunk: Value =
                    serde_json::from_str(data).map_err(|e| format!("bad chunk {data:?}: {e}"))?;
                if chunk.get("error").is_some() {
                    return Err(format!("error in stream: {data}"));
                }
                finished |= chunk["choices"][0]["finish_reason"].is_string();
            }
            if !finished {
                return Err(format!("no finish_reason: {text:?}"));
            }
            Ok(Outcome::Streamed)
        }
        Err(ureq::Error::Status(429, response)) => {
            if response.header("Retry-After").is_none() {
                return Err("429 without Retry-After".into());
            }
            let body: Value = response
                .into_string()
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok())
                .ok_or("the 429 body is not JSON")?;
            if body["error"]["code"] != "rate_limit_exceeded" {
                return Err(format!("429 body {body}"));
            }
            Ok(Outcome::Refused)
        }
        Err(e) => Err(format!("request failed: {e}")),
    }
}

#[test]
fn a_burst_of_streaming_clients_is_served_or_cleanly_refused() {
    const CLIENTS: usize = 64;
    const REQUESTS: usize = 200;
    let server = Server::start(&[
        "--max-queue",
        "8",
        "--max-running",
        "8",
        "--embeddings",
        "none",
    ]);
    let url = server.url("/v1/chat/completions");
    let next = Arc::new(AtomicUsize::new(0));
    let streamed = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, next, streamed, refused, problems) = (
                url.clone(),
                next.clone(),
                streamed.clone(),
                refused.clone(),
                problems.clone(),
            );
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(120))
                    .build();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= REQUESTS {
                        break;
                    }
                    match stream_once(&agent, &url, i) {
                        Ok(Outcome::Streamed) => streamed.fetch_add(1, Ordering::SeqCst),
                        Ok(Outcome::Refused) => {
                            // Back off as a client should, though more briefly
                            // than Retry-After, to keep the burst going.
                            std::thread::sleep(Duration::from_millis(100));
                            refused.fetch_add(1, Ordering::SeqCst)
                        }
                        Err(problem) => {
                            problems
                                .lock()
                                .unwrap()
                                .push(format!("request {i}: {problem}"));
                            0
                        }
                    };
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let elapsed = started.elapsed();
    let problems = problems.lock().unwrap();
    assert!(
        problems.is_empty(),
        "{} bad answers:\n{}",
        problems.len(),
        problems.join("\n")
    );
    let (streamed, refused) = (
        streamed.load(Ordering::SeqCst),
        refused.load(Ordering::SeqCst),
    );
    eprintln!("{streamed} streamed, {refused} refused with 429 in {elapsed:.1?}");
    assert_eq!(streamed + refused, REQUESTS, "requests were lost");
    assert!(streamed >= 8, "only {streamed} requests were served");

    // The server is healthy and idle afterwards.
    let health = get_json(&server.url("/health"));
    assert_eq!(health["status"], "ok");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = get_json(&server.url("/health"));
        if health["queue"]["queued"] == 0 && health["queue"]["running"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the server stays busy: {health}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut server = Server::start(&["--embeddings", "none"]);
    let health = ureq::get(&server.url("/health"))
        .call()
        .expect("/health answers");
    assert_eq!(health.status(), 200);
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit}");
}
