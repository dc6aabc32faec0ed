//! Where Hearth keeps its files on a device.

use std::path::PathBuf;

/// The environment variable that overrides Hearth's home directory.
pub const HEARTH_HOME_ENV: &str = "HEARTH_HOME";

/// Hearth's home directory: `$HEARTH_HOME` when set and non-empty, else
/// `$XDG_CACHE_HOME/hearth`, else `$HOME/.cache/hearth`, else `./.hearth-cache`.
///
/// The directory is not created here; callers create what they write.
pub fn hearth_home() -> PathBuf {
    if let Some(dir) = std::env::var_os(HEARTH_HOME_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("hearth");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".cache").join("hearth");
    }
    PathBuf::from(".hearth-cache")
}
