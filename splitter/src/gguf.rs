//! A GGUF (version 2 and 3) reader over a memory map.
//!
//! The file is treated as hostile: every count is bounded by the bytes left before anything is
//! allocated for it, every string is checked UTF-8, every tensor's byte range (from its type and
//! element count) must lie inside the file at an aligned offset, and names must be unique. A bad
//! file yields [`SplitError::Corrupt`] or [`SplitError::Unsupported`] naming the file and what was
//! being read; no input makes the reader panic or index out of bounds.
//!
//! Layout (all little-endian): `"GGUF"`, u32 version, u64 tensor count, u64 metadata count, the
//! metadata entries (string key, u32 value type, value), the tensor infos (string name, u32 dim
//! count, u64 dims innermost first, u32 ggml type, u64 offset), padding to `general.alignment`
//! (default 32), then the data section, which tensor offsets are relative to. A string is a u64
//! byte length and the bytes; an array is a u32 element type, a u64 length and the elements.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Result, SplitError};
use crate::quant::{self, GgmlType};

const MAGIC: &[u8; 4] = b"GGUF";
/// Magic, version, tensor count and metadata count.
const HEADER_BYTES: u64 = 4 + 4 + 8 + 8;
const DEFAULT_ALIGNMENT: u64 = 32;
const ALIGNMENT_KEY: &str = "general.alignment";
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// Smallest metadata entry: empty key, value type, one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest tensor info: empty name, dim count, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

/// GGUF metadata value type ids (`enum gguf_type`).
mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
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
    Array(GgufArray),
}

/// A metadata array; GGUF arrays are homogeneous, so each is stored as a typed vector (no
/// per-element enum, so memory stays proportional to the file). Nested arrays are refused.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
}

impl GgufValue {
    /// The value of an integer of any width, or `None` for other types.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            GgufValue::U8(x) => x.into(),
            GgufValue::I8(x) => x.into(),
            GgufValue::U16(x) => x.into(),
            GgufValue::I16(x) => x.into(),
            GgufValue::U32(x) => x.into(),
            GgufValue::I32(x) => x.into(),
            GgufValue::U64(x) => x.into(),
            GgufValue::I64(x) => x.into(),
            _ => return None,
        })
    }

    /// Type (and, for numbers and bools, value) for error messages.
    fn describe(&self) -> String {
        match self {
            GgufValue::String(_) => "a string".into(),
            GgufValue::Array(a) => format!("an array of {} {}", a.len(), a.element_type()),
            GgufValue::F32(x) => format!("f32 {x}"),
            GgufValue::F64(x) => format!("f64 {x}"),
            GgufValue::Bool(x) => format!("bool {x}"),
            v => format!("integer {}", v.as_integer().unwrap_or_default()),
        }
    }
}

impl GgufArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(v) => v.len(),
            GgufArray::I8(v) => v.len(),
            GgufArray::U16(v) => v.len(),
            GgufArray::I16(v) => v.len(),
            GgufArray::U32(v) => v.len(),
            GgufArray::I32(v) => v.len(),
            GgufArray::U64(v) => v.len(),
            GgufArray::I64(v) => v.len(),
            GgufArray::F32(v) => v.len(),
            GgufArray::F64(v) => v.len(),
            GgufArray::Bool(v) => v.len(),
            GgufArray::String(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements of an integer array of any width, or `None` for other element types.
    pub fn integers(&self) -> Option<Box<dyn Iterator<Item = i128> + '_>> {
        Some(match self {
            GgufArray::U8(v) => Box::new(v.iter().map(|&x| x.into())),
            GgufArray::I8(v) => Box::new(v.iter().map(|&x| x.into())),
            GgufArray::U16(v) => Box::new(v.iter().map(|&x| x.into())),
            GgufArray::I16(v) => Box::new(v.iter().map(|&x| x.into())),
            GgufArray::U32(v) => Box::new(v.iter().map(|&x| x.into())),
            GgufArray::I32(v) => Box::new(v.iter().map(|&x| x.into())),
            GgufArray::U64(v) => Box::new(v.iter().map(|&x| x.into())),
            GgufArray::I64(v) => Box::new(v.iter().map(|&x| x.into())),
            _ => return None,
        })
    }

    fn element_type(&self) -> &'static str {
        match self {
            GgufArray::U8(_) => "u8",
            GgufArray::I8(_) => "i8",
            GgufArray::U16(_) => "u16",
            GgufArray::I16(_) => "i16",
            GgufArray::U32(_) => "u32",
            GgufArray::I32(_) => "i32",
            GgufArray::U64(_) => "u64",
            GgufArray::I64(_) => "i64",
            GgufArray::F32(_) => "f32",
            GgufArray::F64(_) => "f64",
            GgufArray::Bool(_) => "bool",
            GgufArray::String(_) => "string",
        }
    }
}

/// Where one tensor is and how it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensor {
    pub name: String,
    /// Dimensions as GGUF stores them: innermost (contiguous) first.
    pub dims: Vec<usize>,
    pub ty: GgmlType,
    /// Byte offset from the start of the data section; a multiple of the alignment.
    pub offset: u64,
    n_elements: usize,
    n_bytes: usize,
}

impl GgufTensor {
    /// Row-major shape, outermost first (the dims reversed): a `[rows, cols]` matrix is stored
    /// with dims `[cols, rows]`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }

    /// Number of elements (1 for a tensor with no dims).
    pub fn n_elements(&self) -> usize {
        self.n_elements
    }

    /// Bytes of data in the file.
    pub fn n_bytes(&self) -> usize {
        self.n_bytes
    }
}

/// An open, validated GGUF file. Tensor data stays in the memory map until asked for.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<GgufTensor>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_start: usize,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_entries", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_start", &self.data_start)
            .finish()
    }
}

impl GgufFile {
    /// Maps and validates the file at `path`.
    ///
    /// Like every mmap-based loader, this assumes nobody truncates or rewrites the file while it
    /// is open.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| SplitError::io(path, e))?;
        let len = file.metadata().map_err(|e| SplitError::io(path, e))?.len();
        if len < HEADER_BYTES {
            return Err(SplitError::corrupt(
                path,
                format!("truncated: {len} bytes is shorter than a GGUF header ({HEADER_BYTES})"),
            ));
        }
        // SAFETY: the map is read-only and private to this struct; its contents are only ever
        // read through bounds-checked slices. Another process changing the file under us is the
        // documented limitation above.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| SplitError::io(path, e))?;
        let header = parse(path, &map)?;
        Ok(GgufFile {
            path: path.to_owned(),
            map,
            version: header.version,
            key_index: index(&header.metadata, |(k, _)| k),
            metadata: header.metadata,
            tensor_index: index(&header.tensors, |t| &t.name),
            tensors: header.tensors,
            alignment: header.alignment,
            data_start: header.data_start,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment in bytes (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section in the file.
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// Metadata entries in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &GgufValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[GgufTensor] {
        &self.tensors
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A string value; missing or not a string is an error naming the key.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.required(key, self.get_str_opt(key))
    }

    /// A string value, `None` when absent; present with another type is an error.
    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>> {
        self.convert(key, "a string", |v| match v {
            GgufValue::String(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// An integer of any width whose value fits in u32.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.required(key, self.get_u32_opt(key))
    }

    /// Like [`GgufFile::get_u32`], `None` when absent.
    pub fn get_u32_opt(&self, key: &str) -> Result<Option<u32>> {
        self.convert(key, "an integer in u32 range", |v| {
            v.as_integer().and_then(|x| u32::try_from(x).ok())
        })
    }

    /// An f32 or f64 value (f64 rounded to f32).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.required(key, self.get_f32_opt(key))
    }

    /// Like [`GgufFile::get_f32`], `None` when absent.
    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>> {
        self.convert(key, "a float", |v| match *v {
            GgufValue::F32(x) => Some(x),
            GgufValue::F64(x) => Some(x as f32),
            _ => None,
        })
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.required(key, self.get_bool_opt(key))
    }

    /// Like [`GgufFile::get_bool`], `None` when absent.
    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>> {
        self.convert(key, "a bool", |v| match *v {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        })
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        self.required(key, self.get_str_array_opt(key))
    }

    /// Like [`GgufFile::get_str_array`], `None` when absent.
    pub fn get_str_array_opt(&self, key: &str) -> Result<Option<&[String]>> {
        self.convert(key, "an array of strings", |v| match v {
            GgufValue::Array(GgufArray::String(s)) => Some(s.as_slice()),
            _ => None,
        })
    }

    /// An integer array of any width whose elements all fit in i32 (e.g.
    /// `tokenizer.ggml.token_type`).
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        self.required(key, self.get_i32_array_opt(key))
    }

    /// Like [`GgufFile::get_i32_array`], `None` when absent.
    pub fn get_i32_array_opt(&self, key: &str) -> Result<Option<Vec<i32>>> {
        self.convert(
            key,
            "an integer array with elements in i32 range",
            |v| match v {
                GgufValue::Array(a) => a.integers()?.map(|x| i32::try_from(x).ok()).collect(),
                _ => None,
            },
        )
    }

    /// The info of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Row-major shape of tensor `name`, outermost first (GGUF's dims reversed); `None` when
    /// the file has no such tensor.
    pub fn tensor_shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensor(name).map(GgufTensor::shape)
    }

    /// The raw bytes of tensor `name`, in its GGML type.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.require_tensor(name)?;
        // parse() checked this range; `get` keeps a mistake here from becoming a panic.
        self.data_start
            .checked_add(t.offset as usize)
            .and_then(|start| self.map.get(start..start.checked_add(t.n_bytes)?))
            .ok_or_else(|| {
                SplitError::corrupt(&self.path, format!("tensor `{name}` data out of range"))
            })
    }

    /// Tensor `name` decoded to f32, in storage order (row-major for [`GgufFile::tensor_shape`]).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.require_tensor(name)?;
        if !t.ty.is_supported() {
            return Err(SplitError::unsupported(
                &self.path,
                format!(
                    "tensor `{name}` has type {}, supported: {}",
                    t.ty,
                    quant::supported_names()
                ),
            ));
        }
        let bytes = self.tensor_bytes(name)?;
        let mut out = vec![0.0f32; t.n_elements];
        quant::dequantize(t.ty, bytes, &mut out)
            .map_err(|e| SplitError::corrupt(&self.path, format!("tensor `{name}`: {e}")))?;
        Ok(out)
    }

    fn require_tensor(&self, name: &str) -> Result<&GgufTensor> {
        self.tensor(name).ok_or_else(|| SplitError::MissingTensor {
            path: self.path.clone(),
            tensor: name.to_owned(),
        })
    }

    fn config_error(&self, key: &str, what: String) -> SplitError {
        SplitError::Config {
            path: self.path.clone(),
            key: key.to_owned(),
            what,
        }
    }

    fn convert<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        f: impl FnOnce(&'a GgufValue) -> Option<T>,
    ) -> Result<Option<T>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        match f(value) {
            Some(x) => Ok(Some(x)),
            None => Err(self.config_error(
                key,
                format!("expected {expected}, found {}", value.describe()),
            )),
        }
    }

    fn required<T>(&self, key: &str, value: Result<Option<T>>) -> Result<T> {
        value?.ok_or_else(|| self.config_error(key, "missing".into()))
    }
}

fn index<T>(items: &[T], name: impl Fn(&T) -> &String) -> HashMap<String, usize> {
    items
        .iter()
        .enumerate()
        .map(|(i, x)| (name(x).clone(), i))
        .collect()
}

/// What [`parse`] found before the data section.
struct Header {
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<GgufTensor>,
    alignment: u64,
    data_start: usize,
}

/// A low-level read failure, given its context (what was being read) by the caller.
enum Bad {
    Corrupt(String),
    Unsupported(String),
}

impl Bad {
    fn at(self, path: &Path, context: impl fmt::Display) -> SplitError {
        match self {
            Bad::Corrupt(e) => SplitError::corrupt(path, format!("{e} while reading {context}")),
            Bad::Unsupported(e) => SplitError::unsupported(path, format!("{e} in {context}")),
        }
    }
}

/// A bounds-checked little-endian reader; `pos <= buf.len()` always holds.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        match self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
        {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(Bad::Corrupt(format!(
                "truncated at byte {} ({n} bytes needed, {} left)",
                self.pos,
                self.remaining()
            ))),
        }
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Bad> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, Bad> {
        self.bytes().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, Bad> {
        self.bytes().map(u64::from_le_bytes)
    }

    fn bool(&mut self) -> Result<bool, Bad> {
        match self.bytes::<1>()?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(Bad::Corrupt(format!("bool byte {b} (not 0 or 1)"))),
        }
    }

    fn string(&mut self) -> Result<String, Bad> {
        let len = self.u64()?;
        if len > self.remaining() {
            return Err(Bad::Corrupt(format!(
                "string length {len} exceeds the {} bytes left",
                self.remaining()
            )));
        }
        let start = self.pos;
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| Bad::Corrupt(format!("string at byte {start} is not UTF-8 ({e})")))
    }

    /// Checks that `count` elements of at least `min_bytes` each can fit in what is left.
    fn check_count(&self, count: u64, min_bytes: u64, what: &str) -> Result<usize, Bad> {
        match count.checked_mul(min_bytes) {
            Some(n) if n <= self.remaining() => Ok(count as usize),
            _ => Err(Bad::Corrupt(format!(
                "{count} {what} cannot fit in the {} bytes left",
                self.remaining()
            ))),
        }
    }

    fn value(&mut self, ty: u32) -> Result<GgufValue, Bad> {
        use value_type as t;
        Ok(match ty {
            t::U8 => GgufValue::U8(u8::from_le_bytes(self.bytes()?)),
            t::I8 => GgufValue::I8(i8::from_le_bytes(self.bytes()?)),
            t::U16 => GgufValue::U16(u16::from_le_bytes(self.bytes()?)),
            t::I16 => GgufValue::I16(i16::from_le_bytes(self.bytes()?)),
            t::U32 => GgufValue::U32(u32::from_le_bytes(self.bytes()?)),
            t::I32 => GgufValue::I32(i32::from_le_bytes(self.bytes()?)),
            t::U64 => GgufValue::U64(u64::from_le_bytes(self.bytes()?)),
            t::I64 => GgufValue::I64(i64::from_le_bytes(self.bytes()?)),
            t::F32 => GgufValue::F32(f32::from_le_bytes(self.bytes()?)),
            t::F64 => GgufValue::F64(f64::from_le_bytes(self.bytes()?)),
            t::BOOL => GgufValue::Bool(self.bool()?),
            t::STRING => GgufValue::String(self.string()?),
            t::ARRAY => GgufValue::Array(self.array()?),
            other => return Err(Bad::Corrupt(format!("unknown value type {other}"))),
        })
    }

    fn array(&mut self) -> Result<GgufArray, Bad> {
        use value_type as t;
        let ty = self.u32()?;
        let len = self.u64()?;
        let min_bytes = match ty {
            t::U8 | t::I8 | t::BOOL => 1,
            t::U16 | t::I16 => 2,
            t::U32 | t::I32 | t::F32 => 4,
            t::U64 | t::I64 | t::F64 | t::STRING => 8,
            t::ARRAY => return Err(Bad::Unsupported("nested arrays".into())),
            other => return Err(Bad::Corrupt(format!("unknown array element type {other}"))),
        };
        let n = self.check_count(len, min_bytes, "array elements")?;
        macro_rules! numbers {
            ($variant:ident, $t:ty) => {
                GgufArray::$variant(
                    (0..n)
                        .map(|_| self.bytes().map(<$t>::from_le_bytes))
                        .collect::<Result<_, _>>()?,
                )
            };
        }
        Ok(match ty {
            t::U8 => numbers!(U8, u8),
            t::I8 => numbers!(I8, i8),
            t::U16 => numbers!(U16, u16),
            t::I16 => numbers!(I16, i16),
            t::U32 => numbers!(U32, u32),
            t::I32 => numbers!(I32, i32),
            t::U64 => numbers!(U64, u64),
            t::I64 => numbers!(I64, i64),
            t::F32 => numbers!(F32, f32),
            t::F64 => numbers!(F64, f64),
            t::BOOL => GgufArray::Bool((0..n).map(|_| self.bool()).collect::<Result<_, _>>()?),
            _ => GgufArray::String((0..n).map(|_| self.string()).collect::<Result<_, _>>()?),
        })
    }
}

/// Reads and validates everything before the data section, and every tensor's range in it.
fn parse(path: &Path, buf: &[u8]) -> Result<Header> {
    let corrupt = |what: String| SplitError::corrupt(path, what);
    let mut c = Cursor { buf, pos: 0 };
    let magic: [u8; 4] = c.bytes().map_err(|e| e.at(path, "the magic"))?;
    if &magic != MAGIC {
        return Err(corrupt(format!(
            "not a GGUF file (starts with \"{}\", expected \"GGUF\")",
            magic.escape_ascii()
        )));
    }
    let version = c.u32().map_err(|e| e.at(path, "the version"))?;
    if version != 2 && version != 3 {
        let hint = if matches!(version.swap_bytes(), 2 | 3) {
            " (a big-endian file?)"
        } else {
            ""
        };
        return Err(SplitError::unsupported(
            path,
            format!("GGUF version {version}{hint}; only versions 2 and 3 are read"),
        ));
    }
    let n_tensors = c.u64().map_err(|e| e.at(path, "the tensor count"))?;
    let n_kv = c.u64().map_err(|e| e.at(path, "the metadata count"))?;
    let n_kv = c
        .check_count(n_kv, MIN_KV_BYTES, "metadata entries")
        .map_err(|e| e.at(path, "the header"))?;

    let mut metadata: Vec<(String, GgufValue)> = Vec::new();
    let mut keys = HashMap::new();
    for i in 0..n_kv {
        let key = c
            .string()
            .map_err(|e| e.at(path, format!("metadata key {i}")))?;
        let context = || format!("metadata key {i} (`{key}`)");
        let ty = c.u32().map_err(|e| e.at(path, context()))?;
        let value = c.value(ty).map_err(|e| e.at(path, context()))?;
        if keys.insert(key.clone(), i).is_some() {
            return Err(corrupt(format!("metadata key `{key}` appears twice")));
        }
        metadata.push((key, value));
    }
    let alignment = match keys.get(ALIGNMENT_KEY).map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_integer().and_then(|a| u32::try_from(a).ok()) {
            Some(a) if a.is_power_of_two() => u64::from(a),
            _ => {
                return Err(corrupt(format!(
                    "`{ALIGNMENT_KEY}` must be a power of two, found {}",
                    v.describe()
                )));
            }
        },
    };

    let n_tensors = c
        .check_count(n_tensors, MIN_TENSOR_INFO_BYTES, "tensor infos")
        .map_err(|e| e.at(path, "the header"))?;
    let mut tensors: Vec<GgufTensor> = Vec::new();
    let mut names = HashMap::new();
    for i in 0..n_tensors {
        let name = c
            .string()
            .map_err(|e| e.at(path, format!("tensor info {i}")))?;
        let at = |e: Bad| e.at(path, format!("tensor info {i} (`{name}`)"));
        let n_dims = c.u32().map_err(at)?;
        if n_dims > MAX_DIMS {
            return Err(corrupt(format!(
                "tensor `{name}` has {n_dims} dims (at most {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::new();
        for _ in 0..n_dims {
            let d = c.u64().map_err(at)?;
            match usize::try_from(d) {
                Ok(d) if d <= i64::MAX as usize => dims.push(d),
                _ => return Err(corrupt(format!("tensor `{name}` has a dim of {d}"))),
            }
        }
        let type_id = c.u32().map_err(at)?;
        let offset = c.u64().map_err(at)?;
        let Some(ty) = GgmlType::from_id(type_id) else {
            return Err(SplitError::unsupported(
                path,
                format!("tensor `{name}` has {}", quant::describe_id(type_id)),
            ));
        };
        let n_elements = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let n_elements = n_elements.ok_or_else(|| {
            corrupt(format!(
                "tensor `{name}` dims {dims:?} overflow the element count"
            ))
        })?;
        let innermost = dims.first().copied().unwrap_or(1);
        if !innermost.is_multiple_of(ty.block_size()) {
            return Err(corrupt(format!(
                "tensor `{name}` has type {ty} ({}-element blocks) but an innermost dim of {innermost}",
                ty.block_size()
            )));
        }
        let n_bytes = ty
            .bytes_for(n_elements as u64)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(|| corrupt(format!("tensor `{name}` dims {dims:?} overflow its size")))?;
        if !offset.is_multiple_of(alignment) {
            return Err(corrupt(format!(
                "tensor `{name}` offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        if names.insert(name.clone(), i).is_some() {
            return Err(corrupt(format!("tensor `{name}` appears twice")));
        }
        tensors.push(GgufTensor {
            name,
            dims,
            ty,
            offset,
            n_elements,
            n_bytes,
        });
    }

    // The data section starts at the next multiple of the alignment after the tensor infos.
    let data_start = (c.pos as u64)
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| corrupt("data section start overflows".into()))?;
    for t in &tensors {
        let end = data_start
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes as u64));
        if end.is_none_or(|end| end > buf.len() as u64) {
            return Err(corrupt(format!(
                "tensor `{}` data ({} bytes at data offset {}, data section at byte {data_start}) \
                 runs past the end of the file ({} bytes): truncated or bad offset",
                t.name,
                t.n_bytes,
                t.offset,
                buf.len()
            )));
        }
    }
    let data_start = usize::try_from(data_start)
        .map_err(|_| corrupt(format!("data section start {data_start} is out of range")))?;
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // GGUF value type ids, spelled out again so the writer shares nothing with the reader.
    const U8: u32 = 0;
    const I8: u32 = 1;
    const U16: u32 = 2;
    const I16: u32 = 3;
    const U32: u32 = 4;
    const I32: u32 = 5;
    const F32: u32 = 6;
    const BOOL: u32 = 7;
    const STRING: u32 = 8;
    const ARRAY: u32 = 9;
    const U64: u32 = 10;
    const I64: u32 = 11;
    const F64: u32 = 12;
    // ggml type ids.
    const T_F32: u32 = 0;
    const T_F16: u32 = 1;
    const T_Q4_0: u32 = 2;
    const T_Q4_1: u32 = 3;
    const T_Q8_0: u32 = 8;
    const T_Q2_K: u32 = 10;
    const T_BF16: u32 = 30;

    /// A GGUF string: u64 length, then the bytes.
    fn gstr(s: impl AsRef<[u8]>) -> Vec<u8> {
        let s = s.as_ref();
        [&(s.len() as u64).to_le_bytes()[..], s].concat()
    }

    /// An array value: element type, count, then the encoded elements.
    fn arr(ty: u32, count: u64, elements: &[u8]) -> Vec<u8> {
        [&ty.to_le_bytes()[..], &count.to_le_bytes(), elements].concat()
    }

    struct Tensor {
        name: String,
        dims: Vec<u64>,
        ty: u32,
        data: Vec<u8>,
        offset: Option<u64>,
    }

    /// Writes GGUF files from the format description: header, metadata, tensor infos, padding,
    /// then each tensor's data at the next aligned offset (no padding after the last one, so
    /// every strict prefix of the file is invalid).
    struct Builder {
        version: u32,
        n_tensors: Option<u64>,
        kvs: Vec<u8>,
        n_kv: u64,
        tensors: Vec<Tensor>,
        alignment: u64,
    }

    impl Builder {
        fn new() -> Builder {
            Builder {
                version: 3,
                n_tensors: None,
                kvs: Vec::new(),
                n_kv: 0,
                tensors: Vec::new(),
                alignment: 32,
            }
        }

        fn kv_raw(mut self, key: &[u8], ty: u32, value: &[u8]) -> Builder {
            self.kvs.extend(gstr(key));
            self.kvs.extend(ty.to_le_bytes());
            self.kvs.extend(value);
            self.n_kv += 1;
            self
        }

        fn kv(self, key: &str, ty: u32, value: &[u8]) -> Builder {
            self.kv_raw(key.as_bytes(), ty, value)
        }

        fn tensor(mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> Builder {
            let (name, dims) = (name.to_owned(), dims.to_vec());
            self.tensors.push(Tensor {
                name,
                dims,
                ty,
                data,
                offset: None,
            });
            self
        }

        /// Overrides the stored offset of the last tensor (its data stays where it was).
        fn offset(mut self, offset: u64) -> Builder {
            self.tensors.last_mut().expect("a tensor").offset = Some(offset);
            self
        }

        fn bytes(&self) -> Vec<u8> {
            let n_tensors = self.n_tensors.unwrap_or(self.tensors.len() as u64);
            let mut out = b"GGUF".to_vec();
            out.extend(self.version.to_le_bytes());
            out.extend(n_tensors.to_le_bytes());
            out.extend(self.n_kv.to_le_bytes());
            out.extend(&self.kvs);
            let mut offsets = Vec::new();
            let mut next = 0u64;
            for t in &self.tensors {
                offsets.push(next);
                next = (next + t.data.len() as u64).next_multiple_of(self.alignment);
            }
            for (t, &off) in self.tensors.iter().zip(&offsets) {
                out.extend(gstr(&t.name));
                out.extend((t.dims.len() as u32).to_le_bytes());
                t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
                out.extend(t.ty.to_le_bytes());
                out.extend(t.offset.unwrap_or(off).to_le_bytes());
            }
            if !self.tensors.is_empty() {
                out.resize(
                    (out.len() as u64).next_multiple_of(self.alignment) as usize,
                    0,
                );
            }
            let data_start = out.len();
            for (t, &off) in self.tensors.iter().zip(&offsets) {
                out.resize(data_start + off as usize, 0);
                out.extend(&t.data);
            }
            out
        }
    }

    /// Writes `bytes` to a fresh temp file and opens it.
    fn open(bytes: &[u8]) -> (tempfile::TempDir, PathBuf, Result<GgufFile>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("model.gguf");
        std::fs::write(&path, bytes).expect("write");
        let file = GgufFile::open(&path);
        (dir, path, file)
    }

    fn open_ok(bytes: &[u8]) -> (tempfile::TempDir, GgufFile) {
        let (dir, _, file) = open(bytes);
        (dir, file.expect("valid file"))
    }

    /// The error message of opening `bytes`, which must name the file.
    fn open_err(bytes: &[u8]) -> String {
        let (_dir, path, file) = open(bytes);
        let e = file.expect_err("must be rejected").to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        e
    }

    fn le_f32s(xs: &[f32]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn le_u16s(xs: &[u16]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Nibble bytes `j | (15 - j) << 4`: elements 0-15 count up, 16-31 count down.
    fn ramp_nibbles() -> Vec<u8> {
        (0..16u8).map(|j| j | ((15 - j) << 4)).collect()
    }

    fn every_value_type() -> (Builder, Vec<(&'static str, GgufValue)>) {
        let strs = [gstr("a"), gstr(""), gstr("ß")].concat();
        let b = Builder::new()
            .kv("t.u8", U8, &[200])
            .kv("t.i8", I8, &(-5i8).to_le_bytes())
            .kv("t.u16", U16, &60000u16.to_le_bytes())
            .kv("t.i16", I16, &(-300i16).to_le_bytes())
            .kv("t.u32", U32, &4_000_000_000u32.to_le_bytes())
            .kv("t.i32", I32, &(-70000i32).to_le_bytes())
            .kv("t.f32", F32, &1.5f32.to_le_bytes())
            .kv("t.bool", BOOL, &[1])
            .kv("t.str", STRING, &gstr("héllo"))
            .kv("t.u64", U64, &(1u64 << 40).to_le_bytes())
            .kv("t.i64", I64, &(-1i64 << 40).to_le_bytes())
            .kv("t.f64", F64, &1e-5f64.to_le_bytes())
            .kv("t.strs", ARRAY, &arr(STRING, 3, &strs))
            .kv(
                "t.i32s",
                ARRAY,
                &arr(I32, 3, &[-1i32, 0, 7].map(i32::to_le_bytes).concat()),
            )
            .kv("t.u8s", ARRAY, &arr(U8, 2, &[3, 255]))
            .kv(
                "t.u32s",
                ARRAY,
                &arr(U32, 1, &3_000_000_000u32.to_le_bytes()),
            )
            .kv("t.f32s", ARRAY, &arr(F32, 2, &le_f32s(&[0.5, -2.0])))
            .kv("t.bools", ARRAY, &arr(BOOL, 2, &[1, 0]))
            .kv("t.empty", ARRAY, &arr(U64, 0, &[]));
        let s = |x: &str| x.to_owned();
        let expected = vec![
            ("t.u8", GgufValue::U8(200)),
            ("t.i8", GgufValue::I8(-5)),
            ("t.u16", GgufValue::U16(60000)),
            ("t.i16", GgufValue::I16(-300)),
            ("t.u32", GgufValue::U32(4_000_000_000)),
            ("t.i32", GgufValue::I32(-70000)),
            ("t.f32", GgufValue::F32(1.5)),
            ("t.bool", GgufValue::Bool(true)),
            ("t.str", GgufValue::String(s("héllo"))),
            ("t.u64", GgufValue::U64(1 << 40)),
            ("t.i64", GgufValue::I64(-1 << 40)),
            ("t.f64", GgufValue::F64(1e-5)),
            (
                "t.strs",
                GgufValue::Array(GgufArray::String(vec![s("a"), s(""), s("ß")])),
            ),
            ("t.i32s", GgufValue::Array(GgufArray::I32(vec![-1, 0, 7]))),
            ("t.u8s", GgufValue::Array(GgufArray::U8(vec![3, 255]))),
            (
                "t.u32s",
                GgufValue::Array(GgufArray::U32(vec![3_000_000_000])),
            ),
            ("t.f32s", GgufValue::Array(GgufArray::F32(vec![0.5, -2.0]))),
            (
                "t.bools",
                GgufValue::Array(GgufArray::Bool(vec![true, false])),
            ),
            ("t.empty", GgufValue::Array(GgufArray::U64(vec![]))),
        ];
        (b, expected)
    }

    #[test]
    fn metadata_of_every_type_reads_back_in_order() {
        let (b, expected) = every_value_type();
        let (_dir, f) = open_ok(&b.bytes());
        assert_eq!(f.version(), 3);
        let got: Vec<_> = f.metadata().map(|(k, v)| (k, v.clone())).collect();
        assert_eq!(got, expected);
        assert!(f.tensors().is_empty());
        assert_eq!(f.alignment(), 32);
    }

    #[test]
    fn typed_getters_convert_and_name_the_key() {
        let (b, _) = every_value_type();
        let (_dir, f) = open_ok(&b.bytes());
        let path = f.path().display().to_string();
        assert_eq!(f.get_u32("t.u8").unwrap(), 200);
        assert_eq!(f.get_u32("t.u64").ok(), None, "2^40 does not fit in u32");
        assert_eq!(f.get_u32("t.u32").unwrap(), 4_000_000_000);
        assert_eq!(f.get_f32("t.f32").unwrap(), 1.5);
        assert_eq!(f.get_f32("t.f64").unwrap(), 1e-5f64 as f32);
        assert!(f.get_bool("t.bool").unwrap());
        assert_eq!(f.get_str("t.str").unwrap(), "héllo");
        assert_eq!(f.get_str_array("t.strs").unwrap(), ["a", "", "ß"]);
        assert_eq!(f.get_i32_array("t.i32s").unwrap(), [-1, 0, 7]);
        assert_eq!(f.get_i32_array("t.u8s").unwrap(), [3, 255]);
        assert_eq!(f.get_u32_opt("absent").unwrap(), None);
        assert_eq!(f.get_str_opt("t.str").unwrap(), Some("héllo"));

        let e = f.get_u32("t.i32").unwrap_err().to_string();
        assert!(
            e.contains("`t.i32`") && e.contains(&path) && e.contains("-70000"),
            "{e}"
        );
        let e = f.get_u32_opt("t.str").unwrap_err().to_string();
        assert!(e.contains("`t.str`") && e.contains("found a string"), "{e}");
        let e = f.get_str("absent.key").unwrap_err().to_string();
        assert!(
            e.contains("`absent.key`") && e.contains("missing") && e.contains(&path),
            "{e}"
        );
        let e = f.get_i32_array("t.u32s").unwrap_err().to_string();
        assert!(e.contains("`t.u32s`") && e.contains("i32 range"), "{e}");
        assert!(f.get_i32_array("t.f32s").is_err());
        assert!(f.get_f32("t.u32").is_err());
        assert!(f.get_bool("t.u8").is_err());
        assert!(f.get_str_array("t.i32s").is_err());
    }

    #[test]
    fn tensors_of_each_type_dequantize_exactly() {
        let f32s = [0.0, 1.25, -2.5, 3.0e-3, 1e30, -0.0];
        // f16 bits: 1.5, -2, 65504 (max), 2^-24 (smallest subnormal), -0, 0.333251953125.
        let f16_bits = [0x3E00, 0xC000, 0x7BFF, 0x0001, 0x8000, 0x3555];
        let f16_vals = [1.5, -2.0, 65504.0, 2f32.powi(-24), -0.0, 0.333_251_95];
        // bf16 bits are the top half of an f32: 1, -3, 3.140625, a subnormal.
        let bf16_bits = [0x3F80, 0xC040, 0x4049, 0x0001];
        let bf16_vals = [1.0, -3.0, 3.140625, f32::from_bits(0x0001_0000)];
        // Q8_0: two blocks, d = 0.5 (f16 0x3800) and d = -0.25 (0xB400), q = i - 16.
        let qs: Vec<u8> = (0..32).map(|i| (i as i8 - 16) as u8).collect();
        let q8 = [
            &0x3800u16.to_le_bytes()[..],
            &qs,
            &0xB400u16.to_le_bytes(),
            &qs,
        ]
        .concat();
        let q8_vals: Vec<f32> = (0..64)
            .map(|i| (i % 32) as f32 - 16.0)
            .enumerate()
            .map(|(i, q)| q * if i < 32 { 0.5 } else { -0.25 })
            .collect();
        // Q4_0: d = 0.25 (0x3400); w = (nibble - 8) * d.
        let q4_0 = [&0x3400u16.to_le_bytes()[..], &ramp_nibbles()].concat();
        let ramp = |j: usize| if j < 16 { j as f32 } else { (31 - j) as f32 };
        let q4_0_vals: Vec<f32> = (0..32).map(|j| (ramp(j) - 8.0) * 0.25).collect();
        // Q4_1: d = 0.5 (0x3800), m = -1 (0xBC00); w = nibble * d + m.
        let q4_1 = [&le_u16s(&[0x3800, 0xBC00])[..], &ramp_nibbles()].concat();
        let q4_1_vals: Vec<f32> = (0..32).map(|j| ramp(j) * 0.5 - 1.0).collect();

        let b = Builder::new()
            .kv("general.architecture", STRING, &gstr("llama"))
            .tensor("f32", &[3, 2], T_F32, le_f32s(&f32s))
            .tensor("f16", &[6], T_F16, le_u16s(&f16_bits))
            .tensor("bf16", &[2, 2], T_BF16, le_u16s(&bf16_bits))
            .tensor("q8_0", &[32, 2], T_Q8_0, q8.clone())
            .tensor("q4_0", &[32], T_Q4_0, q4_0)
            .tensor("q4_1", &[32, 1, 1, 1], T_Q4_1, q4_1);
        let (_dir, f) = open_ok(&b.bytes());
        assert_eq!(f.data_start() % 32, 0);
        assert_eq!(f.tensor_shape("f32"), Some(vec![2, 3]));
        assert_eq!(f.tensor_shape("q8_0"), Some(vec![2, 32]));
        assert_eq!(f.tensor_shape("q4_1"), Some(vec![1, 1, 1, 32]));
        assert_eq!(f.tensor_shape("nope"), None);
        let t = f.tensor("q8_0").expect("q8_0");
        assert_eq!(
            (t.ty, t.dims.as_slice(), t.n_elements(), t.n_bytes()),
            (GgmlType::Q8_0, &[32, 2][..], 64, 68)
        );
        assert!(f.tensors().iter().all(|t| t.offset % 32 == 0));
        assert_eq!(f.tensor_bytes("q8_0").unwrap(), q8);

        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let check = |name: &str, want: &[f32]| {
            let got = f.tensor_f32(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(bits(got), bits(want.to_vec()), "{name}");
        };
        check("f32", &f32s);
        check("f16", &f16_vals);
        check("bf16", &bf16_vals);
        check("q8_0", &q8_vals);
        check("q4_0", &q4_0_vals);
        check("q4_1", &q4_1_vals);
        let e = f.tensor_f32("absent").unwrap_err();
        assert!(matches!(e, SplitError::MissingTensor { ref tensor, .. } if tensor == "absent"));
    }

    #[test]
    fn version_2_and_custom_alignment() {
        let mut b = Builder::new()
            .kv("general.alignment", U32, &64u32.to_le_bytes())
            .tensor("a", &[3], T_F32, le_f32s(&[1.0, 2.0, 3.0]))
            .tensor("b", &[1], T_F32, le_f32s(&[4.0]));
        b.version = 2;
        b.alignment = 64;
        let (_dir, f) = open_ok(&b.bytes());
        assert_eq!((f.version(), f.alignment()), (2, 64));
        assert_eq!(f.data_start() % 64, 0);
        assert_eq!(f.tensor("b").map(|t| t.offset), Some(64));
        assert_eq!(f.tensor_f32("b").unwrap(), [4.0]);
        for bad in [0u32, 3, 48] {
            let b = Builder::new().kv("general.alignment", U32, &bad.to_le_bytes());
            assert!(open_err(&b.bytes()).contains("power of two"));
        }
    }

    /// A small valid file touching every part of the format, for the truncation and mutation
    /// loops.
    fn sample() -> Vec<u8> {
        Builder::new()
            .kv("general.architecture", STRING, &gstr("llama"))
            .kv("llama.block_count", U32, &2u32.to_le_bytes())
            .kv(
                "tokenizer.ggml.tokens",
                ARRAY,
                &arr(STRING, 2, &[gstr("<s>"), gstr("hi")].concat()),
            )
            .kv(
                "tokenizer.ggml.token_type",
                ARRAY,
                &arr(I32, 2, &[3i32, 1].map(i32::to_le_bytes).concat()),
            )
            .tensor("norm", &[3], T_F32, le_f32s(&[1.0, 2.0, 3.0]))
            .tensor(
                "emb",
                &[32],
                T_Q8_0,
                [&0x3800u16.to_le_bytes()[..], &[7; 32]].concat(),
            )
            .tensor("half", &[2], T_F16, le_u16s(&[0x3C00, 0x4000]))
            .bytes()
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample();
        let (dir, _) = open_ok(&bytes);
        let path = dir.path().join("cut.gguf");
        let mut messages = Vec::new();
        for cut in 0..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).expect("write");
            let e = GgufFile::open(&path).expect_err("a strict prefix must be rejected");
            messages.push(e.to_string());
        }
        let any = |s: &str| messages.iter().any(|m| m.contains(s));
        assert!(any("truncated at byte"));
        assert!(any(
            "while reading metadata key 2 (`tokenizer.ggml.tokens`)"
        ));
        assert!(any("while reading tensor info 2 (`half`)"));
        assert!(any("3 tensor infos cannot fit"));
        assert!(any("`half` data"));
    }

    #[test]
    fn mutated_files_never_panic() {
        let bytes = sample();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mutant.gguf");
        let mut opened = 0;
        for pos in 0..bytes.len() {
            for patch in [0x00, 0xFF, bytes[pos] ^ 0x01, bytes[pos] ^ 0x80] {
                let mut m = bytes.clone();
                m[pos] = patch;
                std::fs::write(&path, &m).expect("write");
                let Ok(f) = GgufFile::open(&path) else {
                    continue;
                };
                opened += 1;
                for t in f.tensors() {
                    let _ = f.tensor_f32(&t.name);
                }
                let _ = (
                    f.get_str_array("tokenizer.ggml.tokens"),
                    f.get_i32_array("tokenizer.ggml.token_type"),
                );
            }
        }
        assert!(
            opened > 0,
            "some mutations (in values or data) leave a valid file"
        );
    }

    fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
        [
            &b"GGUF"[..],
            &3u32.to_le_bytes(),
            &n_tensors.to_le_bytes(),
            &n_kv.to_le_bytes(),
        ]
        .concat()
    }

    #[test]
    fn rejects_bad_headers() {
        let mut bytes = sample();
        bytes[3] = b'X';
        assert!(open_err(&bytes).contains("not a GGUF file"));
        for version in [1u32, 4, 0x0300_0000] {
            let mut bytes = sample();
            bytes[4..8].copy_from_slice(&version.to_le_bytes());
            let e = open_err(&bytes);
            assert!(
                e.contains("unsupported") && e.contains(&format!("version {version}")),
                "{e}"
            );
        }
        assert!(open_err(&[header(u64::MAX, 0), vec![0; 64]].concat()).contains("tensor infos"));
        assert!(
            open_err(&[header(0, u64::MAX), vec![0; 64]].concat()).contains("metadata entries")
        );
        let huge_string = [header(0, 1), u64::MAX.to_le_bytes().to_vec(), vec![0; 16]].concat();
        let e = open_err(&huge_string);
        assert!(
            e.contains("string length") && e.contains("metadata key 0"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_metadata() {
        let huge_array = Builder::new().kv("a", ARRAY, &arr(U32, 1 << 62, &[0; 8]));
        let e = open_err(&huge_array.bytes());
        assert!(
            e.contains("array elements cannot fit") && e.contains("`a`"),
            "{e}"
        );
        let nested = Builder::new().kv("n", ARRAY, &arr(ARRAY, 1, &arr(U8, 1, &[1])));
        assert!(open_err(&nested.bytes()).contains("unsupported: nested arrays"));
        let bad_utf8 = Builder::new().kv_raw(&[b'k', 0xFF], U8, &[1]);
        assert!(open_err(&bad_utf8.bytes()).contains("not UTF-8"));
        let bad_bool = Builder::new().kv("b", BOOL, &[2]);
        assert!(open_err(&bad_bool.bytes()).contains("bool byte 2"));
        let bad_type = Builder::new().kv("v", 13, &[0; 8]);
        assert!(open_err(&bad_type.bytes()).contains("unknown value type 13"));
        let dup = Builder::new().kv("k", U8, &[1]).kv("k", U8, &[2]);
        assert!(open_err(&dup.bytes()).contains("`k` appears twice"));
    }

    #[test]
    fn rejects_bad_tensor_infos() {
        let f32_tensor = |b: Builder, name: &str| b.tensor(name, &[4], T_F32, vec![0; 16]);
        let out_of_range = f32_tensor(Builder::new(), "w").offset(4096);
        assert!(open_err(&out_of_range.bytes()).contains("`w` data"));
        let misaligned = f32_tensor(Builder::new(), "w").offset(1);
        assert!(open_err(&misaligned.bytes()).contains("not a multiple of the alignment 32"));
        let dup = f32_tensor(f32_tensor(Builder::new(), "w"), "w");
        assert!(open_err(&dup.bytes()).contains("`w` appears twice"));
        let unknown = Builder::new().tensor("w", &[4], 99, vec![0; 16]);
        let e = open_err(&unknown.bytes());
        assert!(e.contains("unknown type id 99") && e.contains("`w`"), "{e}");
        let retired = Builder::new().tensor("w", &[32], 4, vec![0; 20]);
        assert!(open_err(&retired.bytes()).contains("Q4_2"));
        let five_dims = Builder::new().tensor("w", &[1; 5], T_F32, vec![0; 4]);
        assert!(open_err(&five_dims.bytes()).contains("5 dims"));
        let partial_block = Builder::new().tensor("w", &[16, 2], T_Q8_0, vec![0; 34]);
        assert!(open_err(&partial_block.bytes()).contains("innermost dim of 16"));
        let overflow = Builder::new().tensor("w", &[1 << 40, 1 << 40], T_F32, vec![]);
        assert!(open_err(&overflow.bytes()).contains("overflow"));
        let negative = Builder::new().tensor("w", &[u64::MAX], T_F32, vec![]);
        assert!(open_err(&negative.bytes()).contains("dim of"));
        let mut too_many = f32_tensor(Builder::new(), "w");
        too_many.n_tensors = Some(2);
        assert!(open_err(&too_many.bytes()).contains("tensor info 1"));
    }

    #[test]
    fn unsupported_type_is_named_when_read() {
        let b = Builder::new()
            .tensor("blk.0.attn_q.weight", &[256], T_Q2_K, vec![0; 84])
            .tensor("ok", &[1], T_F32, le_f32s(&[2.0]));
        let (_dir, f) = open_ok(&b.bytes());
        let e = f.tensor_f32("blk.0.attn_q.weight").unwrap_err();
        assert!(matches!(e, SplitError::Unsupported { .. }));
        let e = e.to_string();
        assert!(
            e.contains("tensor `blk.0.attn_q.weight` has type Q2_K, supported: F32, F16"),
            "{e}"
        );
        assert_eq!(f.tensor_bytes("blk.0.attn_q.weight").unwrap().len(), 84);
        assert_eq!(f.tensor_f32("ok").unwrap(), [2.0]);
    }
}
