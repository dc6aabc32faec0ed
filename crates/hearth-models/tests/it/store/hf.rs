//! The Hugging Face source against a local HTTP server that answers like
//! the hub (redirect to a CDN path, `X-Linked-*` headers), and network
//! failures that must end in an error, not a hang.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hearth_models::store::{HfFile, ModelStore, NoProgress, StoreError};

use super::{RecordingProgress, gguf_payload, leftovers, sha256_hex};

#[test]
fn hf_specs_parse_and_make_hub_urls() -> Result<()> {
    let file = HfFile::parse("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_0.gguf")?;
    assert_eq!(
        (
            file.repo.as_str(),
            file.file.as_str(),
            file.revision.as_str()
        ),
        (
            "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
            "qwen2.5-0.5b-instruct-q4_0.gguf",
            "main"
        )
    );
    assert_eq!(
        file.url("https://huggingface.co/"),
        "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/qwen2.5-0.5b-instruct-q4_0.gguf"
    );
    assert_eq!(file.default_name(), "qwen2.5-0.5b-instruct-q4_0");

    let pinned = HfFile::parse("hf:o/r/sub dir/Big Model.GGUF@refs/pr/1")?;
    assert_eq!(
        pinned.url("http://mirror"),
        "http://mirror/o/r/resolve/refs%2Fpr%2F1/sub%20dir/Big%20Model.GGUF"
    );
    assert_eq!(pinned.spec(), "hf:o/r/sub dir/Big Model.GGUF@refs/pr/1");
    assert_eq!(pinned.default_name(), "big-model");

    for bad in [
        "hf:",
        "hf:owner/repo",
        "hf:owner/repo/file.bin",
        "hf:owner/repo/../x.gguf",
        "hf:owner/repo/x.gguf@",
        "hf:ow ner/repo/x.gguf",
        "hf:o/r/x.gguf@a b",
    ] {
        let error = HfFile::parse(bad)
            .err()
            .with_context(|| format!("'{bad}' accepted"))?;
        assert!(
            matches!(error, StoreError::InvalidSpec { .. }),
            "{bad}: {error}"
        );
    }
    Ok(())
}

/// A stand-in for the hub: answers each request from `reply`.
mod hub {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    pub struct Reply {
        pub status: &'static str,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
        /// Send the headers and half the body, then go silent.
        pub stall: bool,
    }

    pub struct Hub {
        pub endpoint: String,
        pub requests: Arc<AtomicUsize>,
    }

    pub fn serve(
        reply: impl Fn(&str, &str) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<Hub> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let reply = Arc::new(reply);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                let reply = Arc::clone(&reply);
                std::thread::spawn(move || answer(stream, &*reply));
            }
        });
        Ok(Hub { endpoint, requests })
    }

    fn answer(mut stream: TcpStream, reply: &dyn Fn(&str, &str) -> Reply) {
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head);
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let reply = reply(method, path);
        let mut out = format!(
            "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            reply.status,
            reply.body.len()
        );
        for (name, value) in &reply.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let _ = stream.write_all(out.as_bytes());
        if method == "HEAD" {
            return;
        }
        if reply.stall {
            let _ = stream.write_all(&reply.body[..reply.body.len() / 2]);
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        let _ = stream.write_all(&reply.body);
    }
}

/// Serves `body` the way the hub does: the resolve URL redirects to a CDN
/// path and carries the LFS hash and size in `X-Linked-*` headers.
fn fake_hub(body: Vec<u8>, linked_sha: String) -> Result<hub::Hub> {
    Ok(hub::serve(move |method, path| {
        let linked = vec![
            ("X-Linked-Etag".to_owned(), format!("\"{linked_sha}\"")),
            ("X-Linked-Size".to_owned(), body.len().to_string()),
        ];
        if path == "/someone/tiny-GGUF/resolve/main/Tiny-Model.Q8_0.gguf" {
            let mut headers = linked;
            headers.push(("Location".to_owned(), "/cdn/blob".to_owned()));
            hub::Reply {
                status: "302 Found",
                headers,
                body: Vec::new(),
                stall: false,
            }
        } else if path == "/cdn/blob" && method == "GET" {
            hub::Reply {
                status: "200 OK",
                headers: Vec::new(),
                body: body.clone(),
                stall: false,
            }
        } else {
            hub::Reply {
                status: "404 Not Found",
                headers: Vec::new(),
                body: b"Entry not found".to_vec(),
                stall: false,
            }
        }
    })?)
}

#[test]
fn hf_download_installs_and_is_not_repeated() -> Result<()> {
    let payload = gguf_payload(11, 70_000);
    let hub = fake_hub(payload.clone(), sha256_hex(&payload))?;
    let home = tempfile::tempdir()?;
    let store = ModelStore::new(home.path()).with_hf_endpoint(&hub.endpoint);
    let spec = "hf:someone/tiny-GGUF/Tiny-Model.Q8_0.gguf";
    let mut progress = RecordingProgress::default();
    let installed = store.pull(spec, &mut progress)?;
    assert_eq!(installed.name, "tiny-model.q8_0");
    assert_eq!(fs::read(&installed.path)?, payload);
    assert_eq!(
        installed.source.as_deref(),
        Some("hf:someone/tiny-GGUF/Tiny-Model.Q8_0.gguf@main")
    );
    let download = progress
        .phases
        .iter()
        .find(|(what, _, _)| what.starts_with("downloading"));
    assert_eq!(
        download.map(|(_, total, done)| (*total, *done)),
        Some((Some(payload.len() as u64), payload.len() as u64))
    );

    let requests = hub.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(store.pull(spec, &mut NoProgress)?.path, installed.path);
    assert_eq!(
        hub.requests.load(std::sync::atomic::Ordering::SeqCst),
        requests,
        "an installed file was fetched again"
    );
    assert_eq!(store.resolve(spec, false, &mut NoProgress)?, installed.path);
    Ok(())
}

#[test]
fn hf_download_is_checked_against_the_hub_hash() -> Result<()> {
    let payload = gguf_payload(12, 1000);
    let hub = fake_hub(payload, sha256_hex(b"the hub says otherwise"))?;
    let home = tempfile::tempdir()?;
    let store = ModelStore::new(home.path()).with_hf_endpoint(&hub.endpoint);
    let error = store
        .pull("hf:someone/tiny-GGUF/Tiny-Model.Q8_0.gguf", &mut NoProgress)
        .err()
        .context("bad hash accepted")?;
    assert!(
        matches!(error, StoreError::ChecksumMismatch { .. }),
        "{error}"
    );
    assert!(store.list()?.is_empty());

    let error = store
        .pull("hf:someone/tiny-GGUF/absent.gguf", &mut NoProgress)
        .err()
        .context("404 accepted")?;
    assert!(
        matches!(&error, StoreError::Download { reason, .. } if reason.contains("404")),
        "{error}"
    );
    assert_eq!(leftovers(home.path())?, Vec::<String>::new());
    Ok(())
}

#[test]
fn hf_network_failures_are_errors_not_hangs() -> Result<()> {
    let home = tempfile::tempdir()?;
    // Nothing listens on a port taken and released again.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let store = ModelStore::new(home.path()).with_hf_endpoint(&format!("http://{closed}"));
    let error = store
        .pull("hf:o/r/m.gguf", &mut NoProgress)
        .err()
        .context("unreachable hub accepted")?;
    assert!(
        matches!(&error, StoreError::Download { reason, .. } if reason.contains("network error")),
        "{error}"
    );

    let stalling = hub::serve(|_, _| hub::Reply {
        status: "200 OK",
        headers: Vec::new(),
        body: gguf_payload(0, 4096),
        stall: true,
    })?;
    let store = ModelStore::new(home.path())
        .with_hf_endpoint(&stalling.endpoint)
        .with_network_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let error = store
        .pull("hf:o/r/m.gguf", &mut NoProgress)
        .err()
        .context("stalled download accepted")?;
    assert!(matches!(error, StoreError::Download { .. }), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(store.list()?.is_empty());
    Ok(())
}
