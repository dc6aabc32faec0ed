//! GGUF reader (versions 2 and 3, little-endian).
//!
//! The file is memory-mapped once and never copied: [`TensorView`]s borrow
//! their bytes from the mapping, so opening a model costs only the parse of
//! its header. The header is untrusted input: every read is bounds-checked
//! against the file length, every count is checked against the bytes left
//! before anything is allocated for it, and every tensor's shape, type,
//! alignment and data range is validated at open, so the accessors below
//! cannot fail on a file that opened.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use hearth_kernels::{Matrix, WeightType};
use memmap2::Mmap;

use crate::error::{ModelError, Result};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (ggml's limit).
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of arrays inside metadata values that is accepted.
const MAX_ARRAY_DEPTH: usize = 8;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// A short name of the value's type, for error messages (`u32`,
    /// `string`, `array<string>`).
    pub fn type_name(&self) -> String {
        match self {
            Self::U8(_) => "u8".into(),
            Self::I8(_) => "i8".into(),
            Self::U16(_) => "u16".into(),
            Self::I16(_) => "i16".into(),
            Self::U32(_) => "u32".into(),
            Self::I32(_) => "i32".into(),
            Self::U64(_) => "u64".into(),
            Self::I64(_) => "i64".into(),
            Self::F32(_) => "f32".into(),
            Self::F64(_) => "f64".into(),
            Self::Bool(_) => "bool".into(),
            Self::String(_) => "string".into(),
            Self::Array(items) => match items.first() {
                Some(first) => format!("array<{}>", first.type_name()),
                None => "array<>".into(),
            },
        }
    }

    /// The value as a signed 128-bit integer, when it is an integer.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(v) => v.into(),
            Self::I8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U64(v) => v.into(),
            Self::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value as f64, when it is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_integer().map(|v| v as f64),
        }
    }

    /// The string, when the value is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, when the value is an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// One tensor's header entry.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row width (fastest varying).
    pub dims: Vec<u64>,
    pub ty: WeightType,
    /// Offset of the data from the start of the tensor-data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of values (product of the dimensions; 1 for a scalar).
    /// Validated at open to fit in `usize`.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row width: `dims[0]` (1 for a scalar).
    pub fn cols(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows: the product of `dims[1..]`.
    pub fn rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    /// Bytes of the tensor's data, or `None` when the shape does not fit
    /// the type (row width not a multiple of the block size) or overflows.
    pub fn byte_size(&self) -> Option<u64> {
        let block = u64::try_from(self.ty.block_size()).ok()?;
        let type_size = u64::try_from(self.ty.type_size()).ok()?;
        let cols = self.cols();
        if block == 0 || !cols.is_multiple_of(block) {
            return None;
        }
        let mut elements: u64 = 1;
        for &d in &self.dims {
            elements = elements.checked_mul(d)?;
        }
        (elements / block).checked_mul(type_size)
    }
}

/// A tensor's data, borrowed from the mapped file.
///
/// `data.len()` is exactly the byte size of `info`'s shape in `info.ty`.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    fn kernel_error(&self, source: hearth_kernels::KernelError) -> ModelError {
        ModelError::Kernel {
            tensor: self.info.name.clone(),
            source,
        }
    }

    fn rows_cols(&self) -> Result<(usize, usize)> {
        let too_big = || ModelError::BadTensor {
            tensor: self.info.name.clone(),
            reason: "too large for this platform".into(),
        };
        let rows = usize::try_from(self.info.rows()).map_err(|_| too_big())?;
        let cols = usize::try_from(self.info.cols()).map_err(|_| too_big())?;
        Ok((rows, cols))
    }

    /// The tensor as a matrix: `cols = dims[0]`, `rows = product of the rest`.
    pub fn matrix(&self) -> Result<Matrix<'a>> {
        let (rows, cols) = self.rows_cols()?;
        Matrix::new(self.info.ty, rows, cols, self.data).map_err(|e| self.kernel_error(e))
    }

    /// The tensor as f32 values, dequantized (for small tensors: norms, biases).
    /// The result has `n_elements()` values in ggml order.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let (rows, cols) = self.rows_cols()?;
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| ModelError::BadTensor {
                tensor: self.info.name.clone(),
                reason: "too large for this platform".into(),
            })?;
        match self.info.ty {
            WeightType::F32 => {
                check_len(self, n, 4)?;
                Ok(self
                    .data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect())
            }
            WeightType::F16 => {
                check_len(self, n, 2)?;
                Ok(self
                    .data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect())
            }
            WeightType::BF16 => {
                check_len(self, n, 2)?;
                Ok(self
                    .data
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect())
            }
            _ => {
                let matrix = self.matrix()?;
                let mut out = vec![0.0f32; n];
                if cols > 0 {
                    for (row, dst) in out.chunks_exact_mut(cols).enumerate() {
                        matrix
                            .dequantize_row(row, dst)
                            .map_err(|e| self.kernel_error(e))?;
                    }
                }
                Ok(out)
            }
        }
    }
}

fn check_len(view: &TensorView<'_>, n: usize, elem: usize) -> Result<()> {
    let ty = view.info.ty;
    let expected = n.saturating_mul(elem);
    if view.data.len() != expected {
        return Err(view.kernel_error(hearth_kernels::KernelError::BadSize {
            what: "tensor",
            ty,
            rows: 1,
            cols: n,
            expected,
            actual: view.data.len(),
        }));
    }
    Ok(())
}

/// An open, memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .field("metadata_keys", &self.metadata.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps and parses `path`, validating the whole header (see the module
    /// documentation). Errors name the file and what is wrong with it.
    pub fn open(path: &Path) -> Result<Self> {
        let io_err = |source| ModelError::Io {
            path: path.into(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len == 0 {
            return Err(ModelError::Truncated {
                path: path.into(),
                what: "magic bytes".into(),
                offset: 0,
                file_len: 0,
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
            version: header.version,
            alignment: header.alignment,
            data_offset: header.data_offset,
            metadata: header.metadata,
            tensor_index: header.tensor_index,
            tensors: header.tensors,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of tensor data in bytes (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the tensor-data section from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The tensor-data section: the mapped bytes from [`Self::data_offset`]
    /// to the end of the file. A tensor's data starts at its
    /// [`TensorInfo::offset`] inside it (empty when the file has no data).
    pub fn data_section(&self) -> &[u8] {
        usize::try_from(self.data_offset)
            .ok()
            .and_then(|start| self.map.get(start..))
            .unwrap_or(&[])
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Every metadata key-value pair, by key.
    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    fn missing(&self, key: &str) -> ModelError {
        ModelError::MissingKey {
            path: self.path.clone(),
            key: key.into(),
        }
    }

    fn wrong_type(&self, key: &str, expected: &'static str, value: &MetaValue) -> ModelError {
        let found = match value.as_integer() {
            Some(v) => format!("{} (value {v})", value.type_name()),
            None => value.type_name(),
        };
        ModelError::WrongKeyType {
            path: self.path.clone(),
            key: key.into(),
            expected,
            found,
        }
    }

    /// Any integer type that fits in u32; `MissingKey`/`WrongKeyType` otherwise.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get_u32_opt(key)?.ok_or_else(|| self.missing(key))
    }

    /// `Ok(None)` when absent.
    pub fn get_u32_opt(&self, key: &str) -> Result<Option<u32>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        value
            .as_integer()
            .and_then(|v| u32::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| self.wrong_type(key, "an integer that fits in u32", value))
    }

    /// F32 or F64 (or an integer) as f32.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.get_f32_opt(key)?.ok_or_else(|| self.missing(key))
    }

    /// Like [`Self::get_f32`], `Ok(None)` when absent.
    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        value
            .as_f64()
            .map(|v| Some(v as f32))
            .ok_or_else(|| self.wrong_type(key, "a number", value))
    }

    /// A bool value; `Ok(None)` when absent, `WrongKeyType` for other types.
    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Bool(b)) => Ok(Some(*b)),
            Some(value) => Err(self.wrong_type(key, "bool", value)),
        }
    }

    /// A string value; `MissingKey`/`WrongKeyType` otherwise.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get_str_opt(key)?.ok_or_else(|| self.missing(key))
    }

    /// Like [`Self::get_str`], `Ok(None)` when absent.
    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::String(s)) => Ok(Some(s)),
            Some(value) => Err(self.wrong_type(key, "string", value)),
        }
    }

    /// The elements of an array value; `Ok(None)` when absent.
    pub fn get_array_opt(&self, key: &str) -> Result<Option<&[MetaValue]>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Array(items)) => Ok(Some(items)),
            Some(value) => Err(self.wrong_type(key, "array", value)),
        }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// Every tensor's header entry, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`, borrowing its bytes from the mapping.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let missing = || ModelError::MissingTensor {
            path: self.path.clone(),
            name: name.into(),
        };
        let info = self
            .tensor_index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
            .ok_or_else(missing)?;
        // Validated at open: the range lies inside the mapping.
        let range = tensor_range(self.data_offset, info).ok_or_else(missing)?;
        let data = self.map.get(range).ok_or_else(missing)?;
        Ok(TensorView { info, data })
    }

    /// Whether a tensor named `name` exists.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensor_index.contains_key(name)
    }
}

/// The byte range of `info`'s data in the file, if it fits in `usize`.
fn tensor_range(data_offset: u64, info: &TensorInfo) -> Option<std::ops::Range<usize>> {
    let start = data_offset.checked_add(info.offset)?;
    let end = start.checked_add(info.byte_size()?)?;
    Some(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
}

/// What [`parse_header`] extracts.
struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

/// A bounds-checked little-endian cursor over the file bytes.
struct Reader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn truncated(&self, what: &str) -> ModelError {
        ModelError::Truncated {
            path: self.path.into(),
            what: what.into(),
            offset: self.pos as u64,
            file_len: self.bytes.len() as u64,
        }
    }

    fn corrupt(&self, reason: String) -> ModelError {
        ModelError::Corrupt {
            path: self.path.into(),
            reason,
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| self.truncated(what))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let slice = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items that need at least `min_item_bytes` each: rejected
    /// (as truncation) when the rest of the file could not hold them.
    fn count(&mut self, min_item_bytes: usize, what: &str) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let fits = usize::try_from(n).ok().filter(|&n| {
            n.checked_mul(min_item_bytes)
                .is_some_and(|b| b <= self.remaining())
        });
        fits.ok_or_else(|| ModelError::Truncated {
            path: self.path.into(),
            what: format!("{what} ({n} items)"),
            offset: at as u64,
            file_len: self.bytes.len() as u64,
        })
    }

    /// A length-prefixed string. Invalid UTF-8 is replaced (U+FFFD) rather
    /// than rejected: some vocabularies store raw byte fragments.
    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.count(1, what)?;
        let bytes = self.take(len, what)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn value(&mut self, type_id: u32, depth: usize, what: &str) -> Result<MetaValue> {
        Ok(match type_id {
            0 => MetaValue::U8(self.u8(what)?),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(what)?)),
            2 => MetaValue::U16(self.u16(what)?),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => MetaValue::U32(self.u32(what)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.u8(what)? {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.corrupt(format!("{what}: bool value {b} is neither 0 nor 1"))),
            },
            8 => MetaValue::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.corrupt(format!(
                        "{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let elem_type = self.u32(what)?;
                let min = min_value_bytes(elem_type).ok_or_else(|| {
                    self.corrupt(format!("{what}: unknown array element type {elem_type}"))
                })?;
                let n = self.count(min, what)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem_type, depth + 1, what)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(self.corrupt(format!("{what}: unknown value type {other}"))),
        })
    }
}

/// The fewest bytes a value of GGUF type `type_id` occupies, or `None` for
/// an unknown type.
fn min_value_bytes(type_id: u32) -> Option<usize> {
    Some(match type_id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        10..=12 => 8,
        _ => return None,
    })
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    let mut r = Reader {
        path,
        bytes,
        pos: 0,
    };
    let magic = r.take(4, "magic bytes")?;
    if magic != GGUF_MAGIC {
        return Err(ModelError::BadMagic {
            path: path.into(),
            found: magic.to_vec(),
        });
    }
    let version = r.u32("version")?;
    if version != 2 && version != 3 {
        return Err(ModelError::UnsupportedVersion {
            path: path.into(),
            version,
        });
    }
    // Smallest tensor info: name length, n_dims, type, offset.
    let n_tensors = r.count(8 + 4 + 4 + 8, "tensor count")?;
    // Smallest key-value pair: key length, value type, one byte of value.
    let n_kv = r.count(8 + 4 + 1, "metadata count")?;

    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = r.string("metadata key")?;
        let type_id = r.u32("metadata value type")?;
        let value = r.value(type_id, 0, &format!("metadata value of '{key}'"))?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(r.corrupt(format!("metadata key '{key}' appears twice")));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(MetaValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(other) => {
            return Err(r.corrupt(format!(
                "general.alignment must be a power of two u32, found {other:?}"
            )));
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors);
    let mut tensor_index = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = r.string("tensor name")?;
        let n_dims = r.u32("tensor dimension count")?;
        let n_dims = usize::try_from(n_dims)
            .ok()
            .filter(|&n| n <= MAX_DIMS)
            .ok_or_else(|| {
                r.corrupt(format!(
                    "tensor '{name}' has {n_dims} dimensions (at most {MAX_DIMS} allowed)"
                ))
            })?;
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(r.u64("tensor dimension")?);
        }
        let type_id = r.u32("tensor type")?;
        let ty =
            WeightType::from_ggml_id(type_id).ok_or_else(|| ModelError::UnknownTensorType {
                path: path.into(),
                tensor: name.clone(),
                type_id,
            })?;
        let offset = r.u64("tensor data offset")?;
        if tensor_index.insert(name.clone(), i).is_some() {
            return Err(r.corrupt(format!("tensor '{name}' appears twice")));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
        });
    }

    let header_end = r.pos as u64;
    let data_offset = header_end
        .div_ceil(alignment)
        .checked_mul(alignment)
        .ok_or_else(|| r.corrupt("tensor data offset overflows".into()))?;
    let file_len = bytes.len() as u64;
    for info in &tensors {
        validate_tensor(path, info, alignment, data_offset, file_len)?;
    }
    Ok(Header {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
        tensor_index,
    })
}

fn validate_tensor(
    path: &Path,
    info: &TensorInfo,
    alignment: u64,
    data_offset: u64,
    file_len: u64,
) -> Result<()> {
    let corrupt = |reason: String| ModelError::Corrupt {
        path: path.into(),
        reason,
    };
    let name = &info.name;
    if !info.offset.is_multiple_of(alignment) {
        return Err(corrupt(format!(
            "tensor '{name}' data offset {} is not a multiple of the alignment {alignment}",
            info.offset
        )));
    }
    let mut elements: u64 = 1;
    for &d in &info.dims {
        elements = elements
            .checked_mul(d)
            .filter(|&e| usize::try_from(e).is_ok() && e <= file_len.saturating_mul(8))
            .ok_or_else(|| {
                corrupt(format!(
                    "tensor '{name}' shape {:?} is too large",
                    info.dims
                ))
            })?;
    }
    let block = info.ty.block_size() as u64;
    if !info.cols().is_multiple_of(block) {
        return Err(corrupt(format!(
            "tensor '{name}' row width {} is not a multiple of the {} block size {block}",
            info.cols(),
            info.ty.name()
        )));
    }
    let size = info.byte_size().ok_or_else(|| {
        corrupt(format!(
            "tensor '{name}' shape {:?} is too large",
            info.dims
        ))
    })?;
    let end = data_offset
        .checked_add(info.offset)
        .and_then(|start| start.checked_add(size));
    match end {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(ModelError::Truncated {
            path: path.into(),
            what: format!(
                "data of tensor '{name}' ({size} bytes at data offset {})",
                info.offset
            ),
            offset: data_offset.saturating_add(info.offset),
            file_len,
        }),
    }
}
