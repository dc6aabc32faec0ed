//! Atomic installation into `<home>/models/<name>`.
//!
//! A model is assembled in a staging directory `<home>/tmp/<name>+<pid>+<nanos>`
//! (same filesystem as the store, so the final step is a rename), hashed while
//! it is written, checked, synced, and only then renamed into place: readers
//! see either no `model.gguf` or a complete, verified one. A model made of
//! several files is staged as a whole directory, whose manifest lists every
//! file with its SHA-256 and size, and replaces the installed directory as a
//! whole: readers see the old directory, none, or the new one. A per-name lock file
//! (`<home>/tmp/<name>.lock`) serialises pulls of one model; while holding it, a
//! pull removes staging directories that interrupted pulls left behind.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Progress, StoreError};

/// The model file inside a model directory.
pub(crate) const MODEL_FILE: &str = "model.gguf";
/// The manifest inside a model directory.
pub(crate) const MANIFEST_FILE: &str = "manifest.json";
/// The first bytes of every GGUF file.
const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// Longest accepted model name, in bytes.
const MAX_NAME_LEN: usize = 96;
/// Read/write chunk size while streaming a model, in bytes.
const CHUNK: usize = 1 << 20;

/// What `<name>/manifest.json` records about an installed model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub name: String,
    /// Where the file came from (`pypi:…`, `hf:…`, `file:…`, `wheel:…`).
    pub source: String,
    /// Lowercase hex SHA-256 of `model.gguf`.
    pub sha256: String,
    /// Size of `model.gguf` in bytes.
    pub size: u64,
    /// Unix time of the install, in seconds.
    pub installed_at: u64,
    /// The files of a model installed as a directory (then `sha256` is their
    /// [`directory_digest`] and `size` their total); empty for `model.gguf`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ManifestFile>,
}

/// One file of a model directory, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ManifestFile {
    /// Relative, `/`-separated path inside the model directory.
    pub path: String,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    pub size: u64,
}

/// What one file of a model directory is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExpectedFile<'a> {
    pub path: &'a str,
    pub sha256: Option<&'a str>,
    pub size: Option<u64>,
}

/// The digest of a model directory: the lowercase hex SHA-256 of one line
/// `"<sha256>  <path>\n"` per file (the `sha256sum` format), sorted by path.
/// Two directories with the same digest hold the same files.
pub fn directory_digest<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut files: Vec<(&str, &str)> = files.into_iter().collect();
    files.sort_unstable();
    let mut hasher = Sha256::new();
    for (path, sha256) in files {
        hasher.update(format!("{}  {path}\n", sha256.to_ascii_lowercase()).as_bytes());
    }
    hex(&hasher.finalize())
}

/// What a download is checked against before it is installed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Expected {
    /// Lowercase or uppercase hex SHA-256.
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

/// Checks a download's size and SHA-256 against what was expected of it
/// (`name` labels the error).
fn check_download(
    name: &str,
    want_size: Option<u64>,
    want_sha256: Option<&str>,
    size: u64,
    sha256: &str,
) -> Result<(), StoreError> {
    if let Some(want) = want_size
        && want != size
    {
        return Err(StoreError::SizeMismatch {
            name: name.to_owned(),
            expected: want,
            actual: size,
        });
    }
    if let Some(want) = want_sha256
        && !want.eq_ignore_ascii_case(sha256)
    {
        return Err(StoreError::ChecksumMismatch {
            name: name.to_owned(),
            expected: want.to_ascii_lowercase(),
            actual: sha256.to_owned(),
        });
    }
    Ok(())
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Accepts names made of ASCII letters, digits, `.`, `-` and `_` that start
/// with a letter or digit: such a name is always one plain path component.
pub(crate) fn validate_name(name: &str) -> Result<(), StoreError> {
    let invalid = |reason: &str| {
        Err(StoreError::InvalidName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid("it is longer than 96 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return invalid("it must start with a letter or a digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return invalid("only ASCII letters, digits, '.', '-' and '_' are allowed");
    }
    Ok(())
}

/// Accepts a relative file path inside a model directory: `/`-separated
/// components that are each valid as a model name (so never `..`, never
/// absolute, never a drive), other than the manifest.
pub(crate) fn validate_file_path(path: &str) -> Result<(), StoreError> {
    let invalid = |reason: &str| {
        Err(StoreError::InvalidFilePath {
            path: path.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if path == MANIFEST_FILE {
        return invalid("it is the manifest's name");
    }
    if path.is_empty() || path.len() > 4 * MAX_NAME_LEN {
        return invalid("it must have 1 to 384 characters");
    }
    for component in path.split('/') {
        if validate_name(component).is_err() {
            return invalid(
                "each '/'-separated part must start with a letter or a digit and hold only ASCII letters, digits, '.', '-' and '_'",
            );
        }
    }
    Ok(())
}

/// A model name made from a file stem: lowercased, other characters turned
/// into `-`. The result may still be invalid (e.g. empty); check it.
pub(crate) fn derive_name(stem: &str) -> String {
    let mapped: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    mapped
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(MAX_NAME_LEN)
        .collect()
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Reads `dir/manifest.json`; `None` when it is missing or unreadable.
pub(crate) fn read_manifest(dir: &Path) -> Option<Manifest> {
    let bytes = fs::read(dir.join(MANIFEST_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes `dir/manifest.json` through a synced temporary file and a rename,
/// so a reader never sees a partial manifest.
pub(crate) fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), StoreError> {
    let partial = dir.join(".manifest.json.partial");
    let target = dir.join(MANIFEST_FILE);
    let mut bytes = serde_json::to_vec_pretty(manifest).map_err(|error| StoreError::Io {
        path: target.clone(),
        source: error.into(),
    })?;
    bytes.push(b'\n');
    let mut file = File::create(&partial).map_err(io_error(&partial))?;
    file.write_all(&bytes).map_err(io_error(&partial))?;
    file.sync_all().map_err(io_error(&partial))?;
    fs::rename(&partial, &target).map_err(io_error(&target))
}

/// A manifest for a file just verified.
pub(crate) fn new_manifest(name: &str, origin: &str, sha256: String, size: u64) -> Manifest {
    Manifest {
        name: name.to_owned(),
        source: origin.to_owned(),
        sha256,
        size,
        installed_at: unix_now(),
        files: Vec::new(),
    }
}

/// Syncs a directory so that renames into it survive a crash. Best effort:
/// some filesystems refuse to sync directories.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// SHA-256 (lowercase hex) and length of a file, reported as one progress phase.
pub(crate) fn hash_file(
    path: &Path,
    what: &str,
    progress: &mut dyn Progress,
) -> Result<(String, u64), StoreError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let total = file.metadata().ok().map(|metadata| metadata.len());
    let mut hasher = Sha256::new();
    let length = stream(&mut file, what, total, progress, |chunk| {
        hasher.update(chunk);
        Ok(())
    })
    .map_err(|error| match error {
        StreamError::Read(source) | StreamError::Write(source) => StoreError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    Ok((hex(&hasher.finalize()), length))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

enum StreamError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `reader` to `sink` chunk by chunk as one progress phase; returns the
/// number of bytes copied.
fn stream(
    reader: &mut dyn Read,
    what: &str,
    total: Option<u64>,
    progress: &mut dyn Progress,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<u64, StreamError> {
    progress.start(what, total);
    let mut buffer = vec![0_u8; CHUNK];
    let mut count = 0_u64;
    let result = loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break Ok(count),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => break Err(StreamError::Read(error)),
        };
        let Some(chunk) = buffer.get(..read) else {
            break Err(StreamError::Read(io::Error::other(
                "reader reported more bytes than it was given room for",
            )));
        };
        if let Err(error) = sink(chunk) {
            break Err(StreamError::Write(error));
        }
        count += read as u64;
        progress.advance(read as u64);
    };
    progress.finish();
    result
}

/// Holds the per-name install lock; released on drop.
#[derive(Debug)]
pub(crate) struct NameLock {
    _file: File,
}

/// Takes the install lock of `name`, waiting (as a progress phase) while
/// another process holds it. On filesystems without locking, goes on unlocked.
pub(crate) fn lock_name(
    tmp_dir: &Path,
    name: &str,
    progress: &mut dyn Progress,
) -> Result<NameLock, StoreError> {
    fs::create_dir_all(tmp_dir).map_err(io_error(tmp_dir))?;
    let path = tmp_dir.join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            progress.start(&format!("waiting for another pull of {name}"), None);
            let locked = file.lock();
            progress.finish();
            locked.map_err(io_error(&path))?;
        }
        Err(TryLockError::Error(error)) if error.kind() == io::ErrorKind::Unsupported => {}
        Err(TryLockError::Error(error)) => return Err(io_error(&path)(error)),
    }
    Ok(NameLock { _file: file })
}

/// Removes staging directories of `name` left by interrupted pulls. Call only
/// while holding the name's lock. Best effort.
pub(crate) fn remove_stale_staging(tmp_dir: &Path, name: &str) {
    let prefix = format!("{name}+");
    let Ok(entries) = fs::read_dir(tmp_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_str()
            .is_some_and(|file| file.starts_with(&prefix))
            && entry.file_type().is_ok_and(|kind| kind.is_dir());
        if stale {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A unique path `<tmp>/<name>+<pid>+<nanos>` for staging or for a directory
/// on its way out. `+` never occurs in a valid name, so the prefix `<name>+`
/// belongs to this name alone.
pub(crate) fn unique_tmp_path(tmp_dir: &Path, name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    tmp_dir.join(format!("{name}+{}+{nanos}", std::process::id()))
}

/// How the staged model file came to be.
enum Content {
    Empty,
    /// Written by this process; `hasher` covers every byte written.
    Written {
        file: File,
        hasher: Sha256,
        length: u64,
    },
    /// A hard link to a local file; hashed when verified.
    Linked,
}

/// A model being assembled. Dropping it removes the staging directory and
/// everything in it that was not committed.
pub(crate) struct Staging {
    root: PathBuf,
    install_dir: PathBuf,
    /// The file being written: `model.gguf`, or the current file of a
    /// directory (see [`Staging::begin_file`]).
    model_path: PathBuf,
    content: Content,
    /// The directory file being written, relative to `install_dir`.
    current: Option<String>,
    /// Directory files written and synced so far.
    done: Vec<ManifestFile>,
}

impl Staging {
    /// Creates `<tmp>/<name>+…/install/`.
    pub(crate) fn create(tmp_dir: &Path, name: &str) -> Result<Self, StoreError> {
        let root = unique_tmp_path(tmp_dir, name);
        let install_dir = root.join("install");
        fs::create_dir_all(&install_dir).map_err(io_error(&install_dir))?;
        let model_path = install_dir.join(MODEL_FILE);
        Ok(Self {
            root,
            install_dir,
            model_path,
            content: Content::Empty,
            current: None,
            done: Vec::new(),
        })
    }

    /// Starts the next file of a model installed as a directory, at the
    /// relative `path`; later [`append`](Self::append)s write to it. The
    /// file written before is synced and recorded.
    pub(crate) fn begin_file(&mut self, path: &str) -> Result<(), StoreError> {
        validate_file_path(path)?;
        self.finish_file()?;
        if self.done.iter().any(|file| file.path == path) {
            return Err(StoreError::InvalidFilePath {
                path: path.to_owned(),
                reason: "it is named twice".to_owned(),
            });
        }
        let target = self.install_dir.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        self.model_path = target;
        self.current = Some(path.to_owned());
        Ok(())
    }

    /// Syncs and records the directory file being written, if any (a file
    /// begun but never appended to is created empty).
    fn finish_file(&mut self) -> Result<(), StoreError> {
        let Some(path) = self.current.take() else {
            return Ok(());
        };
        let (sha256, size) = match std::mem::replace(&mut self.content, Content::Empty) {
            Content::Written {
                file,
                hasher,
                length,
            } => {
                file.sync_all().map_err(io_error(&self.model_path))?;
                (hex(&hasher.finalize()), length)
            }
            Content::Empty => {
                File::create(&self.model_path)
                    .and_then(|file| file.sync_all())
                    .map_err(io_error(&self.model_path))?;
                (hex(&Sha256::digest(b"")), 0)
            }
            Content::Linked => hash_file(&self.model_path, "hashing", &mut super::NoProgress)?,
        };
        self.done.push(ManifestFile { path, sha256, size });
        Ok(())
    }

    /// A scratch directory inside the staging area (for downloads), created
    /// on demand and removed with the staging area.
    pub(crate) fn scratch_dir(&self, label: &str) -> Result<PathBuf, StoreError> {
        let dir = self.root.join("scratch").join(label);
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        Ok(dir)
    }

    /// Appends everything `reader` yields to the model file as one progress
    /// phase (`total` bytes if known); returns the number of bytes appended.
    /// Read failures are mapped with `on_read_error`.
    pub(crate) fn append(
        &mut self,
        reader: &mut dyn Read,
        what: &str,
        total: Option<u64>,
        progress: &mut dyn Progress,
        on_read_error: impl FnOnce(io::Error) -> StoreError,
    ) -> Result<u64, StoreError> {
        if matches!(self.content, Content::Empty) {
            let file = File::create(&self.model_path).map_err(io_error(&self.model_path))?;
            self.content = Content::Written {
                file,
                hasher: Sha256::new(),
                length: 0,
            };
        }
        let Content::Written {
            file,
            hasher,
            length,
        } = &mut self.content
        else {
            return Err(StoreError::Io {
                path: self.model_path.clone(),
                source: io::Error::other("cannot append to a hard-linked model file"),
            });
        };
        let appended = stream(reader, what, total, progress, |chunk| {
            hasher.update(chunk);
            file.write_all(chunk)
        })
        .map_err(|error| match error {
            StreamError::Read(source) => on_read_error(source),
            StreamError::Write(source) => StoreError::Io {
                path: self.model_path.clone(),
                source,
            },
        })?;
        *length += appended;
        Ok(appended)
    }

    /// Stages a local file: a hard link where the filesystem allows it (no
    /// copy, same bytes; later in-place edits of the original show through),
    /// else a copy.
    pub(crate) fn import_file(
        &mut self,
        source: &Path,
        progress: &mut dyn Progress,
    ) -> Result<(), StoreError> {
        if matches!(self.content, Content::Empty) && fs::hard_link(source, &self.model_path).is_ok()
        {
            self.content = Content::Linked;
            return Ok(());
        }
        let mut file = File::open(source).map_err(io_error(source))?;
        let total = file.metadata().ok().map(|metadata| metadata.len());
        let what = format!("copying {}", source.display());
        self.append(&mut file, &what, total, progress, io_error(source))?;
        Ok(())
    }

    /// Syncs the model file, checks it against `expected` and the GGUF magic,
    /// and writes the manifest beside it. `origin` is the manifest's source.
    pub(crate) fn verify(
        &mut self,
        name: &str,
        origin: &str,
        expected: &Expected,
        progress: &mut dyn Progress,
    ) -> Result<Manifest, StoreError> {
        let (sha256, size) = match std::mem::replace(&mut self.content, Content::Linked) {
            Content::Empty => {
                return Err(StoreError::NotGguf {
                    name: name.to_owned(),
                    origin: origin.to_owned(),
                    found: Vec::new(),
                });
            }
            Content::Written {
                file,
                hasher,
                length,
            } => {
                file.sync_all().map_err(io_error(&self.model_path))?;
                (hex(&hasher.finalize()), length)
            }
            Content::Linked => hash_file(&self.model_path, &format!("verifying {name}"), progress)?,
        };
        check_download(
            name,
            expected.size,
            expected.sha256.as_deref(),
            size,
            &sha256,
        )?;
        let mut magic = Vec::with_capacity(GGUF_MAGIC.len());
        File::open(&self.model_path)
            .and_then(|file| file.take(GGUF_MAGIC.len() as u64).read_to_end(&mut magic))
            .map_err(io_error(&self.model_path))?;
        if magic != GGUF_MAGIC {
            return Err(StoreError::NotGguf {
                name: name.to_owned(),
                origin: origin.to_owned(),
                found: magic,
            });
        }
        let manifest = new_manifest(name, origin, sha256, size);
        write_manifest(&self.install_dir, &manifest)?;
        sync_dir(&self.install_dir);
        Ok(manifest)
    }

    /// Checks the files of a directory model against `files` (each must have
    /// been written) and the directory's digest and total size against
    /// `expected`, and writes the manifest listing them.
    pub(crate) fn verify_directory(
        &mut self,
        name: &str,
        origin: &str,
        expected: &Expected,
        files: &[ExpectedFile<'_>],
    ) -> Result<Manifest, StoreError> {
        self.finish_file()?;
        for want in files {
            let label = format!("{name}/{}", want.path);
            let Some(have) = self.done.iter().find(|file| file.path == want.path) else {
                return Err(StoreError::InvalidFilePath {
                    path: want.path.to_owned(),
                    reason: "it was expected but not written".to_owned(),
                });
            };
            check_download(&label, want.size, want.sha256, have.size, &have.sha256)?;
        }
        let digest = directory_digest(
            self.done
                .iter()
                .map(|file| (file.path.as_str(), file.sha256.as_str())),
        );
        let size = self.done.iter().map(|file| file.size).sum();
        check_download(
            name,
            expected.size,
            expected.sha256.as_deref(),
            size,
            &digest,
        )?;
        let mut manifest = new_manifest(name, origin, digest, size);
        manifest.files = self.done.clone();
        write_manifest(&self.install_dir, &manifest)?;
        for file in &self.done {
            if let Some(parent) = self.install_dir.join(&file.path).parent() {
                sync_dir(parent);
            }
        }
        sync_dir(&self.install_dir);
        Ok(manifest)
    }

    /// Moves a verified directory model into `<models>/<name>`, replacing
    /// whatever was installed under that name: the old directory is first
    /// renamed into the staging area (and removed with it), then the new one
    /// renamed into place; if that fails, the old one is put back. Returns
    /// the model directory's path.
    pub(crate) fn commit_directory(
        self,
        models_dir: &Path,
        name: &str,
    ) -> Result<PathBuf, StoreError> {
        fs::create_dir_all(models_dir).map_err(io_error(models_dir))?;
        let target = models_dir.join(name);
        let replaced = self.root.join("replaced");
        let had_old = fs::symlink_metadata(&target).is_ok();
        if had_old {
            fs::rename(&target, &replaced).map_err(io_error(&target))?;
        }
        if let Err(error) = fs::rename(&self.install_dir, &target) {
            if had_old {
                let _ = fs::rename(&replaced, &target);
            }
            return Err(io_error(&target)(error));
        }
        sync_dir(models_dir);
        Ok(target)
    }

    /// Moves the verified model into `<models>/<name>`: the whole directory
    /// when the name is new, else the model file and then the manifest, each
    /// by an atomic rename over the old one. Returns the model file's path.
    pub(crate) fn commit(self, models_dir: &Path, name: &str) -> Result<PathBuf, StoreError> {
        fs::create_dir_all(models_dir).map_err(io_error(models_dir))?;
        let target = models_dir.join(name);
        if target.is_dir() {
            let model = target.join(MODEL_FILE);
            fs::rename(&self.model_path, &model).map_err(io_error(&model))?;
            let manifest = target.join(MANIFEST_FILE);
            fs::rename(self.install_dir.join(MANIFEST_FILE), &manifest)
                .map_err(io_error(&manifest))?;
            sync_dir(&target);
        } else {
            fs::rename(&self.install_dir, &target).map_err(io_error(&target))?;
        }
        sync_dir(models_dir);
        Ok(target.join(MODEL_FILE))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Close the file before removing it (required on Windows).
        self.content = Content::Empty;
        let _ = fs::remove_dir_all(&self.root);
    }
}
