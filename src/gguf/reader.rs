//! The GGUF reader: parses and validates the header, metadata and tensor infos of a GGUF v2/v3
//! file, keeping the bytes memory-mapped so tensor data is zero-copy.
//!
//! Nothing is allocated or read before its size has been checked against the file: every count,
//! length, dimension, type, offset and size is validated with checked arithmetic.

use std::collections::HashMap;
use std::path::Path;

use super::value::{type_id, type_name, Array, Value};
use crate::quant::GgmlType;
use crate::{Error, Result};

/// The four magic bytes at the start of every GGUF file.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// The data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (ggml's GGML_MAX_DIMS).
pub const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays inside arrays that the reader accepts.
pub const MAX_ARRAY_DEPTH: u32 = 8;

/// One tensor's description from the file's tensor info table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.3.ffn_up.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the contiguous row length.
    pub dims: Vec<u64>,
    /// The storage type.
    pub ty: GgmlType,
    /// Absolute file offset of the tensor's data.
    pub offset: u64,
    /// Size of the tensor's data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (product of the dimensions; validated not to overflow at open).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Row length (`dims[0]`, 1 for a 0-D tensor).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of dims[1..]).
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |a, &d| a.saturating_mul(d))
    }
}

enum Bytes {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mmap(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed, validated GGUF file.
pub struct GgufFile {
    bytes: Bytes,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Gguf(msg.into())
}

/// A bounds-checked cursor over the file bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(bad(format!(
                "truncated: {} needs {} bytes at offset {} but file size is {}",
                what(),
                n,
                self.pos,
                self.buf.len()
            )));
        }
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Raw string bytes: u64 length then bytes; the length is checked against the file.
    fn str_bytes(&mut self, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let start = self.pos;
        let len = self.u64(&|| format!("length of {}", what()))?;
        if len > self.remaining() {
            return Err(bad(format!(
                "{} length {} at offset {} exceeds file size {}",
                what(),
                len,
                start,
                self.buf.len()
            )));
        }
        self.take(len, what)
    }

    /// A string that must be valid UTF-8 (keys, tensor names).
    fn strict_string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let start = self.pos;
        let b = self.str_bytes(what)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(bad(format!(
                "{} at offset {} is not valid UTF-8 (bad byte at {}): {:?}",
                what(),
                start,
                e.valid_up_to(),
                String::from_utf8_lossy(b)
            ))),
        }
    }

    /// A string value. llama.cpp stores values as raw bytes without UTF-8 validation, so invalid
    /// sequences are replaced by U+FFFD rather than refusing the file.
    fn value_string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let b = self.str_bytes(what)?;
        Ok(match std::str::from_utf8(b) {
            Ok(s) => s.to_string(),
            Err(_) => {
                tracing::warn!("{} is not valid UTF-8; invalid bytes replaced", what());
                String::from_utf8_lossy(b).into_owned()
            }
        })
    }
}

/// Smallest number of bytes one element of value type `ty` occupies in the file.
fn min_value_size(ty: u32) -> u64 {
    match ty {
        type_id::U8 | type_id::I8 | type_id::BOOL => 1,
        type_id::U16 | type_id::I16 => 2,
        type_id::U32 | type_id::I32 | type_id::F32 => 4,
        type_id::U64 | type_id::I64 | type_id::F64 | type_id::STRING => 8,
        type_id::ARRAY => 12,
        _ => 1,
    }
}

/// A capacity for `n` claimed elements of `T` that never reserves more bytes than `budget`
/// (the bytes left in the file): a lying count cannot make us allocate, only real content.
fn capped<T>(n: u64, budget: u64) -> usize {
    let per = std::mem::size_of::<T>().max(1) as u64;
    n.min(budget / per) as usize
}

fn read_fixed<const N: usize, T>(
    c: &mut Cursor<'_>,
    n: usize,
    what: &dyn Fn() -> String,
    conv: fn([u8; N]) -> T,
) -> Result<Vec<T>> {
    let total = (n as u64)
        .checked_mul(N as u64)
        .ok_or_else(|| bad(format!("{} byte size overflows", what())))?;
    let bytes = c.take(total, what)?;
    Ok(bytes
        .chunks_exact(N)
        .map(|ch| {
            let mut a = [0u8; N];
            a.copy_from_slice(ch);
            conv(a)
        })
        .collect())
}

fn read_bool(b: u8, what: &dyn Fn() -> String) -> Result<bool> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(bad(format!(
            "{} has bool value {v} (expected 0 or 1)",
            what()
        ))),
    }
}

fn read_array(c: &mut Cursor<'_>, what: &dyn Fn() -> String, depth: u32) -> Result<Array> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(bad(format!(
            "{} nests arrays deeper than {MAX_ARRAY_DEPTH}",
            what()
        )));
    }
    let start = c.pos;
    let ety = c.u32(&|| format!("element type of {}", what()))?;
    if type_name(ety).is_none() {
        return Err(bad(format!(
            "{} has unknown array element type {ety} at offset {start}",
            what()
        )));
    }
    let len = c.u64(&|| format!("length of {}", what()))?;
    let min = min_value_size(ety);
    if len.checked_mul(min).is_none_or(|b| b > c.remaining()) {
        return Err(bad(format!(
            "{} array length {len} (of {}) at offset {start} exceeds file size {}",
            what(),
            type_name(ety).unwrap_or("?"),
            c.buf.len()
        )));
    }
    let n = len as usize;
    Ok(match ety {
        type_id::U8 => Array::U8(read_fixed(c, n, what, u8::from_le_bytes)?),
        type_id::I8 => Array::I8(read_fixed(c, n, what, i8::from_le_bytes)?),
        type_id::U16 => Array::U16(read_fixed(c, n, what, u16::from_le_bytes)?),
        type_id::I16 => Array::I16(read_fixed(c, n, what, i16::from_le_bytes)?),
        type_id::U32 => Array::U32(read_fixed(c, n, what, u32::from_le_bytes)?),
        type_id::I32 => Array::I32(read_fixed(c, n, what, i32::from_le_bytes)?),
        type_id::U64 => Array::U64(read_fixed(c, n, what, u64::from_le_bytes)?),
        type_id::I64 => Array::I64(read_fixed(c, n, what, i64::from_le_bytes)?),
        type_id::F32 => Array::F32(read_fixed(c, n, what, f32::from_le_bytes)?),
        type_id::F64 => Array::F64(read_fixed(c, n, what, f64::from_le_bytes)?),
        type_id::BOOL => {
            let raw = c.take(len, what)?;
            let mut v = Vec::with_capacity(capped::<bool>(len, raw.len() as u64));
            for (i, &b) in raw.iter().enumerate() {
                v.push(read_bool(b, &|| format!("{}[{i}]", what()))?);
            }
            Array::Bool(v)
        }
        type_id::STRING => {
            let mut v = Vec::with_capacity(capped::<String>(len, c.remaining()));
            for i in 0..n {
                v.push(c.value_string(&|| format!("{}[{i}]", what()))?);
            }
            Array::String(v)
        }
        _ => {
            // type_id::ARRAY (others were rejected above)
            let mut v = Vec::with_capacity(capped::<Array>(len, c.remaining()));
            for i in 0..n {
                v.push(read_array(c, &|| format!("{}[{i}]", what()), depth + 1)?);
            }
            Array::Array(v)
        }
    })
}

fn read_value(c: &mut Cursor<'_>, ty: u32, what: &dyn Fn() -> String) -> Result<Value> {
    Ok(match ty {
        type_id::U8 => Value::U8(u8::from_le_bytes(c.array(what)?)),
        type_id::I8 => Value::I8(i8::from_le_bytes(c.array(what)?)),
        type_id::U16 => Value::U16(u16::from_le_bytes(c.array(what)?)),
        type_id::I16 => Value::I16(i16::from_le_bytes(c.array(what)?)),
        type_id::U32 => Value::U32(u32::from_le_bytes(c.array(what)?)),
        type_id::I32 => Value::I32(i32::from_le_bytes(c.array(what)?)),
        type_id::U64 => Value::U64(u64::from_le_bytes(c.array(what)?)),
        type_id::I64 => Value::I64(i64::from_le_bytes(c.array(what)?)),
        type_id::F32 => Value::F32(f32::from_le_bytes(c.array(what)?)),
        type_id::F64 => Value::F64(f64::from_le_bytes(c.array(what)?)),
        type_id::BOOL => Value::Bool(read_bool(c.array::<1>(what)?[0], what)?),
        type_id::STRING => Value::String(c.value_string(what)?),
        type_id::ARRAY => Value::Array(read_array(c, what, 1)?),
        other => {
            return Err(bad(format!("{} has unknown value type {other}", what())));
        }
    })
}

impl GgufFile {
    /// Opens and validates a GGUF file, memory-mapping it.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file =
            std::fs::File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        // SAFETY: the mapping is read-only; the file is not modified by this process. As with any
        // mmap, truncation of the file by another process while mapped is outside our control.
        let mmap = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        Self::parse(Bytes::Mmap(mmap))
    }

    /// Parses and validates a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        Self::parse(Bytes::Owned(bytes))
    }

    fn parse(bytes: Bytes) -> Result<GgufFile> {
        let buf = bytes.as_slice();
        let file_size = buf.len() as u64;
        let mut c = Cursor { buf, pos: 0 };
        let magic = c.array::<4>(&|| "magic".into())?;
        if &magic != GGUF_MAGIC {
            return Err(bad(format!(
                "bad magic {:?} (expected \"GGUF\")",
                String::from_utf8_lossy(&magic)
            )));
        }
        let version = c.u32(&|| "version".into())?;
        if version != 2 && version != 3 {
            return Err(bad(format!(
                "unsupported version {version} (supported: 2, 3)"
            )));
        }
        let n_tensors = c.u64(&|| "tensor count".into())?;
        let n_kv = c.u64(&|| "metadata kv count".into())?;
        // A kv needs at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at least
        // 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
        if n_kv.checked_mul(13).is_none_or(|b| b > c.remaining()) {
            return Err(bad(format!(
                "metadata kv count {n_kv} exceeds what file size {file_size} can hold (truncated or corrupt)"
            )));
        }
        if n_tensors.checked_mul(24).is_none_or(|b| b > c.remaining()) {
            return Err(bad(format!(
                "tensor count {n_tensors} exceeds what file size {file_size} can hold (truncated or corrupt)"
            )));
        }

        let mut metadata = Vec::with_capacity(capped::<(String, Value)>(n_kv, c.remaining()));
        let mut index = HashMap::with_capacity(capped::<(String, Value)>(n_kv, c.remaining()));
        for i in 0..n_kv {
            let key = c.strict_string(&|| format!("key of metadata kv {i}"))?;
            let ty = c.u32(&|| format!("value type of key '{key}'"))?;
            let value = read_value(&mut c, ty, &|| format!("key '{key}'"))?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(bad(format!("duplicate metadata key '{key}'")));
            }
            metadata.push((key, value));
        }

        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_integer() {
                Some(a) if a > 0 && a <= u32::MAX as i128 && (a as u64).is_power_of_two() => {
                    a as u64
                }
                _ => {
                    return Err(bad(format!(
                        "general.alignment {v} must be a nonzero power of two"
                    )))
                }
            },
        };

        struct Raw {
            name: String,
            dims: Vec<u64>,
            ty: GgmlType,
            rel: u64,
            n_bytes: u64,
        }
        let mut raws = Vec::with_capacity(capped::<TensorInfo>(n_tensors, c.remaining()));
        let mut tensor_index =
            HashMap::with_capacity(capped::<TensorInfo>(n_tensors, c.remaining()));
        for i in 0..n_tensors {
            let name = c.strict_string(&|| format!("name of tensor {i}"))?;
            let n_dims = c.u32(&|| format!("n_dims of tensor '{name}'"))?;
            if n_dims > MAX_DIMS {
                return Err(bad(format!(
                    "tensor '{name}' has n_dims {n_dims} (max {MAX_DIMS})"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(c.u64(&|| format!("dimension {d} of tensor '{name}'"))?);
            }
            let ty_id = c.u32(&|| format!("type of tensor '{name}'"))?;
            let ty = GgmlType::from_id(ty_id)
                .map_err(|_| bad(format!("tensor '{name}' has unknown type id {ty_id}")))?;
            let rel = c.u64(&|| format!("offset of tensor '{name}'"))?;

            let mut n_elems: u64 = 1;
            for &d in &dims {
                // ggml stores dimensions as int64_t.
                n_elems = n_elems
                    .checked_mul(d)
                    .filter(|&n| n <= i64::MAX as u64)
                    .ok_or_else(|| {
                        bad(format!(
                            "tensor '{name}' dimensions {dims:?} overflow the element count"
                        ))
                    })?;
            }
            let row = dims.first().copied().unwrap_or(1);
            if row % ty.block_elems() as u64 != 0 {
                return Err(bad(format!(
                    "tensor '{name}' row length {row} is not a multiple of the {} block size {}",
                    ty,
                    ty.block_elems()
                )));
            }
            let row_bytes = ty.row_bytes(row).ok_or_else(|| {
                bad(format!(
                    "tensor '{name}' dimensions {dims:?} overflow the byte size"
                ))
            })?;
            let n_rows = n_elems.checked_div(row).unwrap_or(0);
            let n_bytes = row_bytes.checked_mul(n_rows).ok_or_else(|| {
                bad(format!(
                    "tensor '{name}' dimensions {dims:?} overflow the byte size"
                ))
            })?;
            if rel % alignment != 0 {
                return Err(bad(format!(
                    "tensor '{name}' offset {rel} is not a multiple of the alignment {alignment}"
                )));
            }
            if tensor_index.insert(name.clone(), raws.len()).is_some() {
                return Err(bad(format!("duplicate tensor name '{name}'")));
            }
            raws.push(Raw {
                name,
                dims,
                ty,
                rel,
                n_bytes,
            });
        }

        let header_end = c.pos as u64;
        let data_offset = header_end
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| bad("data offset overflows"))?;
        let mut tensors = Vec::with_capacity(raws.len());
        for r in raws {
            let start = data_offset.checked_add(r.rel);
            let end = start.and_then(|s| s.checked_add(r.n_bytes));
            match (start, end) {
                (Some(s), Some(e)) if e <= file_size => tensors.push(TensorInfo {
                    name: r.name,
                    dims: r.dims,
                    ty: r.ty,
                    offset: s,
                    n_bytes: r.n_bytes,
                }),
                _ => {
                    return Err(bad(format!(
                        "tensor '{}' data [{}, {}) exceeds file size {}",
                        r.name,
                        data_offset as u128 + r.rel as u128,
                        data_offset as u128 + r.rel as u128 + r.n_bytes as u128,
                        file_size
                    )))
                }
            }
        }
        // Tensors must not share bytes (llama.cpp even requires them contiguous, in order).
        let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
        by_offset.sort_by_key(|t| t.offset);
        for w in by_offset.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a.offset + a.n_bytes > b.offset {
                return Err(bad(format!(
                    "tensor '{}' data [{}, {}) overlaps tensor '{}' at {}",
                    a.name,
                    a.offset,
                    a.offset + a.n_bytes,
                    b.name,
                    b.offset
                )));
            }
        }

        Ok(GgufFile {
            bytes,
            version,
            alignment,
            data_offset,
            metadata,
            index,
            tensors,
            tensor_index,
        })
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the whole file in bytes.
    pub fn file_size(&self) -> u64 {
        self.bytes.as_slice().len() as u64
    }

    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| bad(format!("missing metadata key '{key}'")))
    }

    fn int_opt<T: TryFrom<i128>>(&self, key: &str, tname: &str) -> Result<Option<T>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let i = v.as_integer().ok_or_else(|| {
            bad(format!(
                "key '{key}' has type {} (value {}), expected an integer",
                v.type_name(),
                v.display_abbrev(4)
            ))
        })?;
        T::try_from(i)
            .map(Some)
            .map_err(|_| bad(format!("key '{key}' value {i} does not fit {tname}")))
    }

    /// An integer key as u32 (any integer type whose value fits).
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.require(key)?;
        Ok(self.int_opt(key, "u32")?.unwrap_or_default())
    }

    /// An optional integer key as u32.
    pub fn get_u32_opt(&self, key: &str) -> Result<Option<u32>> {
        self.int_opt(key, "u32")
    }

    /// An integer key as u64 (any integer type whose value fits).
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.require(key)?;
        Ok(self.int_opt(key, "u64")?.unwrap_or_default())
    }

    /// An optional integer key as u64.
    pub fn get_u64_opt(&self, key: &str) -> Result<Option<u64>> {
        self.int_opt(key, "u64")
    }

    /// A numeric key (f32, f64 or integer) as f32.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.require(key)?;
        Ok(self.get_f32_opt(key)?.unwrap_or_default())
    }

    /// An optional numeric key (f32, f64 or integer) as f32.
    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_f64().map(|f| Some(f as f32)).ok_or_else(|| {
            bad(format!(
                "key '{key}' has type {} (value {}), expected a number",
                v.type_name(),
                v.display_abbrev(4)
            ))
        })
    }

    /// An optional bool key.
    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(bad(format!(
                "key '{key}' has type {} (value {}), expected bool",
                v.type_name(),
                v.display_abbrev(4)
            ))),
        }
    }

    /// A string key.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.require(key)?;
        Ok(self.get_str_opt(key)?.unwrap_or_default())
    }

    /// An optional string key.
    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(bad(format!(
                "key '{key}' has type {} (value {}), expected string",
                v.type_name(),
                v.display_abbrev(4)
            ))),
        }
    }

    /// An array key of any element type.
    pub fn get_array(&self, key: &str) -> Result<&Array> {
        match self.require(key)? {
            Value::Array(a) => Ok(a),
            v => Err(bad(format!(
                "key '{key}' has type {} (value {}), expected array",
                v.type_name(),
                v.display_abbrev(4)
            ))),
        }
    }

    fn wrong_array(&self, key: &str, a: &Array, want: &str) -> Error {
        bad(format!(
            "key '{key}' is an array of {} ({} items), expected array of {want}",
            a.elem_type_name(),
            a.len()
        ))
    }

    /// An array-of-strings key.
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        match self.get_array(key)? {
            Array::String(v) => Ok(v),
            a => Err(self.wrong_array(key, a, "string")),
        }
    }

    /// An array-of-f32 key.
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32]> {
        match self.get_array(key)? {
            Array::F32(v) => Ok(v),
            a => Err(self.wrong_array(key, a, "f32")),
        }
    }

    /// An array-of-i32 key.
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32]> {
        match self.get_array(key)? {
            Array::I32(v) => Ok(v),
            a => Err(self.wrong_array(key, a, "i32")),
        }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor's data (zero-copy). Bounds were validated at open; a `TensorInfo`
    /// from another file that does not fit this one yields an empty slice.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let buf = self.bytes.as_slice();
        let start = usize::try_from(t.offset).unwrap_or(usize::MAX);
        let end = usize::try_from(t.offset.saturating_add(t.n_bytes)).unwrap_or(usize::MAX);
        buf.get(start..end).unwrap_or(&[])
    }
}
