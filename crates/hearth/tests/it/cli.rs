//! Command-line behaviour: JSON shapes other tools script against, and
//! clear errors (non-zero exit, no panic) on bad model files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn model() -> PathBuf {
    let path = hearth_core::hearth_home().join("models/smollm2-135m-instruct/model.gguf");
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    path
}

fn hearth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .output()
        .expect("run hearth")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert!(
        stderr.contains(needle),
        "stderr does not mention {needle:?}: {stderr}"
    );
}

#[test]
fn tokenize_json_gives_llama_cpp_ids() {
    let m = model();
    let out = hearth(&[
        "tokenize",
        "The quick brown fox jumps over the lazy dog.",
        "--json",
        "--model",
        m.to_str().unwrap(),
    ]);
    let v = json_of(&out);
    assert_eq!(
        v["tokens"],
        serde_json::json!([504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30])
    );
}

#[test]
fn generate_json_has_the_scripted_keys_and_greedy_answer() {
    let m = model();
    let out = hearth(&[
        "generate",
        "The capital of France is",
        "--raw",
        "--max-tokens",
        "3",
        "--json",
        "--threads",
        "2",
        "--model",
        m.to_str().unwrap(),
    ]);
    let v = json_of(&out);
    assert_eq!(
        v["prompt_tokens"],
        serde_json::json!([504, 3575, 282, 4649, 314])
    );
    assert_eq!(v["tokens"], serde_json::json!([7042, 30, 198]));
    assert_eq!(v["text"], " Paris.\n");
    for key in ["prefill_tok_s", "decode_tok_s", "ttft_ms"] {
        assert!(v["timings"][key].is_number(), "timings.{key} missing: {v}");
    }
}

#[test]
fn bench_json_has_the_scripted_keys() {
    let m = model();
    let out = hearth(&[
        "bench",
        "--threads",
        "1",
        "--prompt-tokens",
        "8",
        "--gen-tokens",
        "4",
        "--repetitions",
        "1",
        "--json",
        "--model",
        m.to_str().unwrap(),
    ]);
    let v = json_of(&out);
    for key in ["prefill_tok_s", "decode_tok_s", "ttft_ms", "peak_rss_mb"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn bad_model_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(model()).unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (write(dir.path(), "empty.gguf", b""), "truncated"),
        (
            write(
                dir.path(),
                "magic.gguf",
                b"GGML\x03\x00\x00\x00rest of a file",
            ),
            "not a GGUF file",
        ),
        (write(dir.path(), "header.gguf", &real[..4096]), "truncated"),
        (
            write(dir.path(), "weights.gguf", &real[..real.len() / 2]),
            "weights.gguf",
        ),
        (dir.path().join("missing.gguf"), "missing.gguf"),
    ];
    for (path, needle) in cases {
        let out = hearth(&[
            "generate",
            "hi",
            "--max-tokens",
            "1",
            "--model",
            path.to_str().unwrap(),
        ]);
        assert_clean_failure(&out, needle);
    }
}

#[test]
fn wrong_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(model()).unwrap();
    // Replace the architecture value "llama" (the first occurrence after its key).
    let key = b"general.architecture";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    let value = bytes[at..].windows(5).position(|w| w == b"llama").unwrap() + at;
    bytes[value..value + 5].copy_from_slice(b"mamba");
    let path = write(dir.path(), "arch.gguf", &bytes);
    let out = hearth(&[
        "generate",
        "hi",
        "--max-tokens",
        "1",
        "--model",
        path.to_str().unwrap(),
    ]);
    assert_clean_failure(&out, "architecture 'mamba' is not supported");
}

#[test]
fn help_explains_the_commands() {
    let out = hearth(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["chat", "generate", "tokenize", "bench", "models"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
    let out = hearth(&["generate", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--raw",
        "--temperature",
        "--max-tokens",
        "--model",
        "--json",
    ] {
        assert!(text.contains(flag), "generate --help lacks {flag}");
    }
}

#[test]
fn unknown_model_name_lists_the_catalogue() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["generate", "hi", "--model", "no-such-model"])
        .env("HEARTH_HOME", home.path())
        .output()
        .unwrap();
    assert_clean_failure(&out, "smollm2-135m-instruct");
}
