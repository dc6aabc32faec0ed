//! `hearth watch` end to end through the real binary: a simulated fleet's
//! regression is ingested, detected, listed and explained.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn hearth(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .output()
        .expect("run hearth");
    assert!(
        out.status.success(),
        "hearth {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn path(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// Accepts one HTTP request, answers 200 and yields its body.
fn one_shot_server() -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = reader.into_inner();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        String::from_utf8(body).unwrap()
    });
    (url, handle)
}

#[test]
fn watch_simulate_ingest_detect_alerts_explain() {
    let temp = tempfile::tempdir().unwrap();
    let fleet = temp.path().join("fleet.jsonl");
    let log = temp.path().join("log");
    hearth(&[
        "watch",
        "simulate",
        "--out",
        path(&fleet),
        "--hours",
        "48",
        "--seed",
        "1",
        "--inject",
        "older-phone-ttft",
    ]);
    let lines = std::fs::read_to_string(&fleet).unwrap().lines().count();
    assert!(lines > 100_000, "{lines} events");

    let out = hearth(&["watch", "ingest", path(&fleet), "--dir", path(&log)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("ingested {lines} events")), "{text}");
    // The same file again: every event is a duplicate.
    let out = hearth(&["watch", "ingest", path(&fleet), "--dir", path(&log)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("ingested 0 events ({lines} duplicates")),
        "{text}"
    );

    // The first detection opens the alert and posts it to the webhook.
    let (url, hook) = one_shot_server();
    let out = hearth(&["watch", "detect", "--dir", path(&log), "--webhook", &url]);
    let posted: Value = serde_json::from_str(&hook.join().unwrap()).unwrap();
    assert_eq!(posted["event"], "opened");
    assert_eq!(posted["alert"]["metric"], "ttft_p95");
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(summary.contains("1 alerts"), "{summary}");
    assert!(log.join("alerts.json").is_file());

    let out = hearth(&["watch", "alerts", "--dir", path(&log), "--json"]);
    let alerts: Value = serde_json::from_slice(&out.stdout).unwrap();
    let alerts = alerts.as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert["metric"], "ttft_p95");
    assert_eq!(alert["state"], "open");
    let cause = alert["root_cause"][0]["slice"].to_string();
    assert!(
        cause.contains("older-phone") && cause.contains("1.4"),
        "{cause}"
    );
    let id = alert["id"].as_str().unwrap();

    // A second detect run deduplicates: still one alert.
    hearth(&["watch", "detect", "--dir", path(&log)]);
    let out = hearth(&["watch", "alerts", "--dir", path(&log), "--json"]);
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again.as_array().unwrap().len(), 1);
    assert_eq!(again[0]["occurrences"], 2);

    let out = hearth(&["watch", "explain", &id[..8], "--dir", path(&log)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("device_model=older-phone ∧ model_version=1.4"),
        "{text}"
    );
    assert!(text.contains("magnitude") && text.contains("onset") && text.contains("confidence"));
    let plot = log.join(format!("alert-{id}.svg"));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline") && svg.contains("onset"));

    let out = hearth(&["watch", "ack", id, "--dir", path(&log)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("acknowledged"));
}

#[test]
fn watch_rejects_an_unknown_injection_and_alert() {
    let temp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["watch", "simulate", "--out"])
        .arg(temp.path().join("x.jsonl"))
        .args(["--inject", "nonsense"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown injection"));
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["watch", "explain", "abc", "--dir"])
        .arg(temp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no alert"));
}
