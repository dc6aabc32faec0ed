//! TEMPORARY: compares with a local reference dump.
use anyhow::Result;
use hearth_models::Tokenizer;

#[test]
fn scratch_matches_reference_dump() -> Result<()> {
    let dump: serde_json::Value = serde_json::from_str(&std::fs::read_to_string("/tmp/tokref/ref.json")?)?;
    let mut failures = 0;
    for name in ["smollm2-135m-instruct", "gemma3-270m"] {
        let gguf = crate::support::open_model(name)?;
        let tok = Tokenizer::from_gguf(&gguf)?;
        let model = &dump[name];
        for case in model["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let add = case["add_special"].as_bool().unwrap();
            let parse = case["parse_special"].as_bool().unwrap();
            let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let got = tok.encode(text, add, parse);
            if got != want {
                failures += 1;
                if failures < 30 {
                    eprintln!("{name} {text:?} add={add} parse={parse}\n  want {want:?}\n  got  {got:?}");
                }
            }
        }
        let mut piece_failures = 0;
        for (i, hex) in model["pieces"].as_array().unwrap().iter().enumerate() {
            let hex = hex.as_str().unwrap();
            let got: String = tok.token_bytes(i as u32).iter().map(|b| format!("{b:02x}")).collect();
            if got != hex {
                piece_failures += 1;
                if piece_failures < 10 {
                    eprintln!("{name} piece {i} {:?}: want {hex} got {got}", tok.token_text(i as u32));
                }
            }
        }
        eprintln!("{name}: piece failures {piece_failures}");
        failures += piece_failures;
    }
    assert_eq!(failures, 0);
    Ok(())
}

#[test]
fn scratch_timing() -> Result<()> {
    for name in ["smollm2-135m-instruct", "gemma3-270m"] {
        let gguf = crate::support::open_model(name)?;
        let t0 = std::time::Instant::now();
        let tok = Tokenizer::from_gguf(&gguf)?;
        let load = t0.elapsed();
        let text = "The quick brown fox jumps over the lazy dog, 1234 times! Ünïcödé 中文 😀\n  def f(x): return x**2\n".repeat(100);
        let t1 = std::time::Instant::now();
        let ids = tok.encode(&text, true, true);
        let enc = t1.elapsed();
        let long_word = "a".repeat(20000);
        let t2 = std::time::Instant::now();
        let ids2 = tok.encode(&long_word, true, true);
        eprintln!("{name}: load {load:?}, {} tokens in {enc:?}; long word {} tokens in {:?}", ids.len(), ids2.len(), t2.elapsed());
    }
    Ok(())
}
