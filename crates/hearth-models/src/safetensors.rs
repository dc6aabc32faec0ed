//! Reader for safetensors files.
//!
//! A safetensors file is an 8-byte little-endian header length, a JSON
//! header that maps each tensor name to its dtype, shape and byte range
//! (`data_offsets`, relative to the end of the header), and the tensor bytes.
//! The file is memory-mapped and never copied: [`TensorView`]s borrow their
//! bytes from the mapping. The header is untrusted input and is validated
//! entirely at open — its length against the file, every dtype, every shape
//! against its byte range, every range against the file and against the
//! others (no two may overlap) — so the accessors cannot fail on offsets
//! once a file has opened.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use hearth_kernels::WeightType;
use memmap2::Mmap;
use serde::Deserialize;

use crate::error::{ModelError, Result};

/// Bytes of the header-length prefix.
const PREFIX_LEN: usize = 8;
/// Longest header accepted, in bytes (the format's own limit).
pub const MAX_HEADER_LEN: u64 = 100 * 1024 * 1024;
/// The header key that holds free-form string metadata instead of a tensor.
const METADATA_KEY: &str = "__metadata__";

/// Element types of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dtype {
    Bool,
    U8,
    I8,
    F8E4M3,
    F8E5M2,
    U16,
    I16,
    F16,
    BF16,
    U32,
    I32,
    F32,
    U64,
    I64,
    F64,
}

impl Dtype {
    /// The dtype named `name` in a header (`"F32"`, `"BF16"`, …).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "BOOL" => Self::Bool,
            "U8" => Self::U8,
            "I8" => Self::I8,
            "F8_E4M3" => Self::F8E4M3,
            "F8_E5M2" => Self::F8E5M2,
            "U16" => Self::U16,
            "I16" => Self::I16,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "U32" => Self::U32,
            "I32" => Self::I32,
            "F32" => Self::F32,
            "U64" => Self::U64,
            "I64" => Self::I64,
            "F64" => Self::F64,
            _ => return None,
        })
    }

    /// The name the header uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::U8 => "U8",
            Self::I8 => "I8",
            Self::F8E4M3 => "F8_E4M3",
            Self::F8E5M2 => "F8_E5M2",
            Self::U16 => "U16",
            Self::I16 => "I16",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::U32 => "U32",
            Self::I32 => "I32",
            Self::F32 => "F32",
            Self::U64 => "U64",
            Self::I64 => "I64",
            Self::F64 => "F64",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::U8 | Self::I8 | Self::F8E4M3 | Self::F8E5M2 => 1,
            Self::U16 | Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }

    /// The kernel weight type with the same layout, for the float types the
    /// kernels multiply directly (F32, F16, BF16).
    pub fn weight_type(self) -> Option<WeightType> {
        match self {
            Self::F32 => Some(WeightType::F32),
            Self::F16 => Some(WeightType::F16),
            Self::BF16 => Some(WeightType::BF16),
            _ => None,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor's header entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: Dtype,
    /// Dimensions, outermost first (row-major: the last one varies fastest).
    pub shape: Vec<usize>,
    /// The tensor's bytes within [`SafeTensors::data`]; always exactly
    /// `dtype.size()` times the product of `shape` long.
    pub data_offsets: Range<usize>,
}

impl TensorInfo {
    /// Number of elements (1 for a scalar, whose shape is empty).
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A tensor's header entry with its bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub info: &'a TensorInfo,
    /// The stored bytes, little-endian, `info.data_offsets.len()` long.
    pub data: &'a [u8],
}

impl TensorView<'_> {
    pub fn dtype(&self) -> Dtype {
        self.info.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.info.shape
    }

    /// [`ModelError::BadTensor`] unless the shape is exactly `expected`.
    pub fn expect_shape(&self, expected: &[usize]) -> Result<()> {
        if self.info.shape == expected {
            return Ok(());
        }
        Err(ModelError::BadTensor {
            tensor: self.name.to_owned(),
            reason: format!("shape {:?}, expected {expected:?}", self.info.shape),
        })
    }

    /// The values converted to f32 (F32, F16 and BF16 tensors only).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let Some(ty) = self.info.dtype.weight_type() else {
            return Err(ModelError::BadTensor {
                tensor: self.name.to_owned(),
                reason: format!("dtype {} cannot be read as f32", self.info.dtype),
            });
        };
        let mut values = vec![0.0; self.info.n_elements()];
        hearth_kernels::dequantize_row(ty, self.data, &mut values).map_err(|source| {
            ModelError::Kernel {
                tensor: self.name.to_owned(),
                source,
            }
        })?;
        Ok(values)
    }
}

/// A header entry as written, before validation.
#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// An open, memory-mapped safetensors file.
pub struct SafeTensors {
    path: PathBuf,
    map: Mmap,
    /// Offset of the data section in the file (just past the header).
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for SafeTensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeTensors")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl SafeTensors {
    /// Maps and parses `path`, validating the whole header (see the module
    /// documentation). Errors name the file and what is wrong with it.
    pub fn open(path: &Path) -> Result<Self> {
        let io_err = |source| ModelError::Io {
            path: path.into(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        if file_len < PREFIX_LEN as u64 {
            return Err(ModelError::Truncated {
                path: path.into(),
                what: "the header length".into(),
                offset: 0,
                file_len,
            });
        }
        // SAFETY: the mapping is read-only and lives as long as `self`; as
        // with any mapped file, the file must not be truncated or rewritten
        // by another process while it is open, which is documented for
        // model files (they are written once, atomically, by the store).
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        let header = parse_header(path, &map)?;
        Ok(Self {
            path: path.into(),
            map,
            data_start: header.data_start,
            tensors: header.tensors,
            metadata: header.metadata,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The data section: every byte after the header. Tensors' `data_offsets`
    /// index into it.
    pub fn data(&self) -> &[u8] {
        self.map.get(self.data_start..).unwrap_or(&[])
    }

    /// Every tensor's header entry, by name.
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    /// The header's `__metadata__` (empty when absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The tensor `name`, or [`ModelError::MissingTensor`].
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let (name, info) =
            self.tensors
                .get_key_value(name)
                .ok_or_else(|| ModelError::MissingTensor {
                    path: self.path.clone(),
                    name: name.to_owned(),
                })?;
        let data =
            self.data()
                .get(info.data_offsets.clone())
                .ok_or_else(|| ModelError::BadTensor {
                    tensor: name.clone(),
                    reason: "data range outside the file".into(),
                })?;
        Ok(TensorView { name, info, data })
    }
}

/// A parsed, validated header.
struct Header {
    /// Offset of the data section in the file.
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
}

/// The header of a mapped file at least [`PREFIX_LEN`] bytes long.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    let file_len = bytes.len() as u64;
    let corrupt = |reason: String| ModelError::BadSafetensors {
        path: path.into(),
        reason,
    };
    let mut prefix = [0_u8; PREFIX_LEN];
    prefix.copy_from_slice(bytes.get(..PREFIX_LEN).unwrap_or(&[0; PREFIX_LEN]));
    let header_len = u64::from_le_bytes(prefix);
    if header_len > MAX_HEADER_LEN {
        return Err(corrupt(format!(
            "the header length {header_len} is over the limit of {MAX_HEADER_LEN} bytes"
        )));
    }
    let data_start = PREFIX_LEN as u64 + header_len;
    if data_start > file_len {
        return Err(ModelError::Truncated {
            path: path.into(),
            what: format!("the {header_len}-byte header"),
            offset: PREFIX_LEN as u64,
            file_len,
        });
    }
    // Both fit in the mapping, hence in usize.
    let data_start = data_start as usize;
    let header = bytes.get(PREFIX_LEN..data_start).unwrap_or(&[]);
    let entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|error| corrupt(format!("the header is not a JSON object: {error}")))?;
    let data_len = bytes.len() - data_start;

    let mut metadata = BTreeMap::new();
    let mut tensors = BTreeMap::new();
    for (name, value) in entries {
        if name == METADATA_KEY {
            metadata = serde_json::from_value(value).map_err(|error| {
                corrupt(format!("{METADATA_KEY} is not a map of strings: {error}"))
            })?;
            continue;
        }
        let raw: RawTensor = serde_json::from_value(value)
            .map_err(|error| corrupt(format!("tensor '{name}': {error}")))?;
        let info = validate_tensor(path, &name, raw, data_start, data_len)?;
        tensors.insert(name, info);
    }

    let mut ranges: Vec<(&str, &Range<usize>)> = tensors
        .iter()
        .map(|(name, info)| (name.as_str(), &info.data_offsets))
        .filter(|(_, range)| !range.is_empty())
        .collect();
    ranges.sort_by_key(|(_, range)| (range.start, range.end));
    for pair in ranges.windows(2) {
        if let [(first, a), (second, b)] = pair
            && b.start < a.end
        {
            return Err(corrupt(format!(
                "the data of tensors '{first}' ({a:?}) and '{second}' ({b:?}) overlap"
            )));
        }
    }
    Ok(Header {
        data_start,
        tensors,
        metadata,
    })
}

/// Checks one header entry against the data section (`data_len` bytes from
/// `data_start`).
fn validate_tensor(
    path: &Path,
    name: &str,
    raw: RawTensor,
    data_start: usize,
    data_len: usize,
) -> Result<TensorInfo> {
    let corrupt = |reason: String| ModelError::BadSafetensors {
        path: path.into(),
        reason: format!("tensor '{name}': {reason}"),
    };
    let dtype = Dtype::from_name(&raw.dtype)
        .ok_or_else(|| corrupt(format!("unknown dtype '{}'", raw.dtype)))?;
    let too_big = || corrupt(format!("shape {:?} is too large", raw.shape));
    let shape = raw
        .shape
        .iter()
        .map(|&dim| usize::try_from(dim).map_err(|_| too_big()))
        .collect::<Result<Vec<usize>>>()?;
    let n_bytes = shape
        .iter()
        .try_fold(dtype.size(), |bytes, &dim| bytes.checked_mul(dim))
        .ok_or_else(too_big)?;
    let [begin, end] = raw.data_offsets;
    if begin > end {
        return Err(corrupt(format!(
            "data_offsets [{begin}, {end}] are reversed"
        )));
    }
    if end > data_len as u64 {
        return Err(ModelError::Truncated {
            path: path.into(),
            what: format!("the data of tensor '{name}' (data_offsets [{begin}, {end}])"),
            offset: data_start as u64 + begin,
            file_len: (data_start + data_len) as u64,
        });
    }
    // Both are at most `data_len`, hence fit in usize.
    let range = begin as usize..end as usize;
    if range.len() != n_bytes {
        return Err(corrupt(format!(
            "{dtype} {shape:?} takes {n_bytes} bytes but data_offsets [{begin}, {end}] hold {}",
            range.len()
        )));
    }
    Ok(TensorInfo {
        dtype,
        shape,
        data_offsets: range,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with `header` as its JSON header and `data` after it.
    fn write(dir: &tempfile::TempDir, header: &str, data: &[u8]) -> PathBuf {
        let path = dir.path().join("t.safetensors");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn reads_tensors_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        data.extend_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        let header = r#"{"__metadata__":{"format":"pt"},
            "w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},
            "h":{"dtype":"F16","shape":[],"data_offsets":[24,26]}}  "#;
        let file = SafeTensors::open(&write(&dir, header, &data)).unwrap();
        assert_eq!(
            file.metadata().get("format").map(String::as_str),
            Some("pt")
        );
        let w = file.tensor("w").unwrap();
        assert_eq!((w.dtype(), w.shape()), (Dtype::F32, &[2, 3][..]));
        assert_eq!(w.to_f32().unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        w.expect_shape(&[2, 3]).unwrap();
        assert!(w.expect_shape(&[3, 2]).is_err());
        assert_eq!(file.tensor("h").unwrap().to_f32().unwrap(), [0.5]);
        assert!(matches!(
            file.tensor("missing"),
            Err(ModelError::MissingTensor { .. })
        ));
    }

    #[test]
    fn malformed_headers_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let data = f32_bytes(&[1.0, 2.0]);
        let cases = [
            ("not json", "not a JSON object"),
            ("[1, 2]", "not a JSON object"),
            (
                r#"{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#,
                "unknown dtype",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                "takes 12 bytes",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
                "reversed",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[2]}}"#,
                "missing field `data_offsets`",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                    "b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                "overlap",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#,
                "too large",
            ),
            (r#"{"__metadata__":{"n":1}}"#, "map of strings"),
        ];
        for (header, needle) in cases {
            let error = SafeTensors::open(&write(&dir, header, &data)).unwrap_err();
            assert!(
                matches!(error, ModelError::BadSafetensors { .. }),
                "{header}: {error}"
            );
            assert!(error.to_string().contains(needle), "{header}: {error}");
        }
    }

    #[test]
    fn truncated_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let header = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        let full = write(&dir, header, &f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
        let bytes = std::fs::read(&full).unwrap();
        for len in [0, 5, 8, 20, bytes.len() - 1] {
            let path = dir.path().join("cut.safetensors");
            std::fs::write(&path, &bytes[..len]).unwrap();
            let error = SafeTensors::open(&path).unwrap_err();
            assert!(
                matches!(error, ModelError::Truncated { .. }),
                "{len}: {error}"
            );
        }
        let mut huge = (MAX_HEADER_LEN + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        std::fs::write(&full, huge).unwrap();
        let error = SafeTensors::open(&full).unwrap_err();
        assert!(error.to_string().contains("over the limit"), "{error}");
    }
}
