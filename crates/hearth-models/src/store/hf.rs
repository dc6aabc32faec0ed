//! The Hugging Face source: one file of a model repository, fetched from the
//! hub's documented `{endpoint}/{repo}/resolve/{revision}/{file}` URL.
//!
//! A blocking HTTP client with connect and read timeouts keeps a dead network
//! an error rather than a hang (the `hf-hub` crate's blocking client sets no
//! read timeout and offers no way to set one). Before the download, a HEAD
//! request without redirects reads `X-Linked-Etag` and `X-Linked-Size`, which
//! the hub sets to the SHA-256 and size of LFS files; the download is checked
//! against them.

use std::path::PathBuf;
use std::time::Duration;

use super::install::{Expected, Staging, derive_name};
use super::{Progress, StoreError};

/// Environment variable overriding the hub's address (a mirror).
pub const HF_ENDPOINT_ENV: &str = "HF_ENDPOINT";
/// Environment variable holding an access token for gated or private repos.
pub const HF_TOKEN_ENV: &str = "HF_TOKEN";
/// The hub's address when `$HF_ENDPOINT` is not set.
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";
/// Redirects followed by the download (the hub redirects to its CDN).
const MAX_REDIRECTS: u32 = 8;
const USER_AGENT: &str = concat!("hearth/", env!("CARGO_PKG_VERSION"));

/// A file in a Hugging Face model repository at a revision, written
/// `hf:OWNER/REPO/FILE.gguf[@REVISION]` (the revision defaults to `main`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfFile {
    /// `OWNER/REPO`.
    pub repo: String,
    /// Path of the file inside the repository; ends with `.gguf`.
    pub file: String,
    /// Branch, tag or commit.
    pub revision: String,
}

impl HfFile {
    /// The prefix that marks a Hugging Face spec.
    pub const PREFIX: &'static str = "hf:";

    /// Parses `hf:OWNER/REPO/FILE.gguf[@REVISION]`; `FILE` may contain `/`.
    pub fn parse(spec: &str) -> Result<Self, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidSpec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = spec
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| invalid("it must start with 'hf:'"))?;
        let (path, revision) = match rest.rsplit_once('@') {
            Some((_, "")) => return Err(invalid("the revision after '@' is empty")),
            Some((path, revision)) => (path, revision),
            None => (rest, "main"),
        };
        let mut pieces = path.splitn(3, '/');
        let (Some(owner), Some(repo), Some(file)) = (pieces.next(), pieces.next(), pieces.next())
        else {
            return Err(invalid("expected OWNER/REPO/FILE.gguf"));
        };
        let plain = |text: &str| {
            !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        };
        if !plain(owner) || !plain(repo) || owner.starts_with('.') || repo.starts_with('.') {
            return Err(invalid(
                "the owner and repository are letters, digits, '.', '-' and '_'",
            ));
        }
        if file.contains('\\')
            || file
                .split('/')
                .any(|segment| matches!(segment, "" | "." | ".."))
        {
            return Err(invalid("the file path has an empty, '.' or '..' component"));
        }
        if !file.to_ascii_lowercase().ends_with(".gguf") {
            return Err(invalid("only .gguf files can be pulled"));
        }
        let revision_ok = revision
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
            && !revision
                .split('/')
                .any(|segment| matches!(segment, "" | "." | ".."));
        if !revision_ok {
            return Err(invalid(
                "the revision is letters, digits, '.', '-', '_' and '/'",
            ));
        }
        Ok(Self {
            repo: format!("{owner}/{repo}"),
            file: file.to_owned(),
            revision: revision.to_owned(),
        })
    }

    /// The canonical spec, always with the revision: `hf:REPO/FILE@REVISION`.
    pub fn spec(&self) -> String {
        format!(
            "{}{}/{}@{}",
            Self::PREFIX,
            self.repo,
            self.file,
            self.revision
        )
    }

    /// The download URL under `endpoint` (no trailing `/`), percent-encoded.
    pub fn url(&self, endpoint: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            endpoint.trim_end_matches('/'),
            encode(&self.repo, true),
            encode(&self.revision, false),
            encode(&self.file, true)
        )
    }

    /// The name a pull installs it under: the file's stem, lowercased.
    pub fn default_name(&self) -> String {
        let file = self.file.rsplit('/').next().unwrap_or(&self.file);
        let stem = file
            .get(..file.len().saturating_sub(".gguf".len()))
            .unwrap_or(file);
        derive_name(stem)
    }
}

/// Percent-encodes everything but unreserved characters (and `/` when
/// `keep_slash`).
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && byte == b'/')
        {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `$HF_ENDPOINT` when set and non-empty, else [`DEFAULT_HF_ENDPOINT`].
pub(crate) fn endpoint_from_env() -> String {
    std::env::var(HF_ENDPOINT_ENV)
        .ok()
        .map(|value| value.trim().trim_end_matches('/').to_owned())
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| DEFAULT_HF_ENDPOINT.to_owned())
}

/// `$HF_TOKEN`, else the token `huggingface-cli login` saved
/// (`$HF_HOME/token`, default `~/.cache/huggingface/token`).
fn token_from_env() -> Option<String> {
    let non_empty = |value: String| Some(value.trim().to_owned()).filter(|value| !value.is_empty());
    if let Some(token) = std::env::var(HF_TOKEN_ENV).ok().and_then(non_empty) {
        return Some(token);
    }
    let hf_home = std::env::var_os("HF_HOME")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache").join("huggingface"))
        })?;
    std::fs::read_to_string(hf_home.join("token"))
        .ok()
        .and_then(non_empty)
}

/// Whether `endpoint` names this machine (proxies from the environment are
/// then skipped: the client does not read `NO_PROXY`).
fn is_loopback(endpoint: &str) -> bool {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(bracketed),
        None => authority.split(':').next().unwrap_or(authority),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn http_error(url: &str, error: ureq::Error) -> StoreError {
    let reason = match error {
        ureq::Error::Status(code @ (401 | 403), _) => format!(
            "HTTP {code}: access denied; the repository may be gated or private (set {HF_TOKEN_ENV} to a token that can read it)"
        ),
        ureq::Error::Status(404, _) => {
            "HTTP 404: not found; check the repository, file name and revision".to_owned()
        }
        ureq::Error::Status(code, response) => format!("HTTP {code} {}", response.status_text()),
        ureq::Error::Transport(transport) => format!("network error: {transport}"),
    };
    StoreError::Download {
        url: url.to_owned(),
        reason,
    }
}

/// Downloads `file` from `endpoint` onto the staging file, with `timeout` for
/// connecting and for each read or write. Returns what the hub says the file
/// is (SHA-256 and size of LFS files), for the caller to verify.
pub(crate) fn download(
    file: &HfFile,
    endpoint: &str,
    timeout: Duration,
    staging: &mut Staging,
    progress: &mut dyn Progress,
) -> Result<Expected, StoreError> {
    let url = file.url(endpoint);
    let token = token_from_env();
    let agent = |redirects: u32| {
        ureq::AgentBuilder::new()
            .timeout_connect(timeout)
            .timeout_read(timeout)
            .timeout_write(timeout)
            .redirects(redirects)
            .try_proxy_from_env(!is_loopback(endpoint))
            .user_agent(USER_AGENT)
            .build()
    };
    // Authorization is sent to the hub only: the client drops it on redirects.
    let authorize = |request: ureq::Request| match &token {
        Some(token) => request.set("Authorization", &format!("Bearer {token}")),
        None => request,
    };

    progress.start(&format!("resolving {}", file.spec()), None);
    let probed = authorize(agent(0).head(&url)).call();
    progress.finish();
    let expected = match probed {
        Ok(response) => linked_metadata(&response),
        Err(ureq::Error::Status(code, _)) if !matches!(code, 401 | 403 | 404) => {
            Expected::default()
        }
        Err(error) => return Err(http_error(&url, error)),
    };

    let response = authorize(agent(MAX_REDIRECTS).get(&url))
        .call()
        .map_err(|error| http_error(&url, error))?;
    let length = response
        .header("Content-Length")
        .and_then(|value| value.trim().parse::<u64>().ok());
    let what = format!(
        "downloading {}",
        file.file.rsplit('/').next().unwrap_or(&file.file)
    );
    let mut body = response.into_reader();
    let received = staging.append(
        &mut body,
        &what,
        length.or(expected.size),
        progress,
        |error| {
            let reason = match error.kind() {
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                    format!(
                        "no data for {} s; the network may be down",
                        timeout.as_secs()
                    )
                }
                _ => format!("network error while reading the body: {error}"),
            };
            StoreError::Download {
                url: url.clone(),
                reason,
            }
        },
    )?;
    if let Some(length) = length
        && received != length
    {
        return Err(StoreError::Download {
            url,
            reason: format!("the connection closed after {received} of {length} bytes"),
        });
    }
    Ok(expected)
}

/// SHA-256 and size the hub reports for an LFS file (`X-Linked-Etag` is the
/// SHA-256 for LFS files; for other files it is a git hash and is ignored).
fn linked_metadata(response: &ureq::Response) -> Expected {
    let sha256 = response
        .header("X-Linked-Etag")
        .map(|etag| {
            etag.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_ascii_lowercase()
        })
        .filter(|etag| etag.len() == 64 && etag.bytes().all(|byte| byte.is_ascii_hexdigit()));
    let size = response
        .header("X-Linked-Size")
        .and_then(|value| value.trim().parse::<u64>().ok());
    Expected { sha256, size }
}
