//! The GGUF writer: GGUF v3, little-endian, tensor data aligned to `general.alignment` (32 unless
//! that key is set), tensors laid out contiguously in insertion order as llama.cpp expects.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use super::reader::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
use super::value::{Array, Value};
use crate::quant::GgmlType;
use crate::{Error, Result};

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    /// Byte size the dims need in `ty`.
    n_bytes: u64,
    /// The data, or None for a tensor whose data `write_streaming` produces.
    data: Option<Vec<u8>>,
}

/// Builds a GGUF v3 file in memory and writes it out.
#[derive(Default)]
pub struct GgufWriter {
    kvs: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<PendingTensor>,
    names: HashSet<String>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&a.elem_type_id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::U16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::U64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => v.iter().for_each(|&x| out.push(x as u8)),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::Array(v) => v.iter().for_each(|x| put_array(out, x)),
    }
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
    }
}

impl GgufWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata key, replacing an earlier value of the same key in place.
    pub fn add_kv(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        if self.keys.contains(&key) {
            if let Some(slot) = self.kvs.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = value;
            }
        } else {
            self.keys.insert(key.clone());
            self.kvs.push((key, value));
        }
    }

    /// Adds a tensor. `dims` are in ggml order (dims[0] is the row length); `data` must hold
    /// exactly the bytes those dims need in type `ty`.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<()> {
        let name = name.into();
        let need = self.check_tensor(&name, dims, ty)?;
        if need != data.len() as u64 {
            return Err(Error::InvalidInput(format!(
                "tensor '{name}' dims {dims:?} of type {ty} need {need} bytes, got {}",
                data.len()
            )));
        }
        self.push(name, dims, ty, need, Some(data))
    }

    /// Adds a tensor whose data [`GgufWriter::write_streaming`] asks for when it writes it, so
    /// that only one tensor's data needs to be in memory at a time. Returns its byte size.
    pub fn add_tensor_info(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<u64> {
        let name = name.into();
        let need = self.check_tensor(&name, dims, ty)?;
        self.push(name, dims, ty, need, None)?;
        Ok(need)
    }

    fn check_tensor(&self, name: &str, dims: &[u64], ty: GgmlType) -> Result<u64> {
        if dims.len() > MAX_DIMS as usize {
            return Err(Error::InvalidInput(format!(
                "tensor '{name}' has {} dimensions (max {MAX_DIMS})",
                dims.len()
            )));
        }
        let row = dims.first().copied().unwrap_or(1);
        let rows = dims.iter().skip(1).try_fold(1u64, |a, &d| a.checked_mul(d));
        ty.row_bytes(row)
            .and_then(|rb| rows.and_then(|r| rb.checked_mul(r)))
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "tensor '{name}' dims {dims:?} do not fit type {ty} (block size {})",
                    ty.block_elems()
                ))
            })
    }

    fn push(
        &mut self,
        name: String,
        dims: &[u64],
        ty: GgmlType,
        n_bytes: u64,
        data: Option<Vec<u8>>,
    ) -> Result<()> {
        if !self.names.insert(name.clone()) {
            return Err(Error::InvalidInput(format!(
                "duplicate tensor name '{name}'"
            )));
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ty,
            n_bytes,
            data,
        });
        Ok(())
    }

    fn alignment(&self) -> Result<u64> {
        match self.kvs.iter().find(|(k, _)| k == "general.alignment") {
            None => Ok(DEFAULT_ALIGNMENT),
            Some((_, v)) => match v.as_integer() {
                Some(a) if a > 0 && a <= u32::MAX as i128 && (a as u64).is_power_of_two() => {
                    Ok(a as u64)
                }
                _ => Err(Error::InvalidInput(format!(
                    "general.alignment {v} must be a nonzero power of two"
                ))),
            },
        }
    }

    /// The header (magic through tensor infos, padded to the alignment) and the data offsets.
    fn header(&self) -> Result<(Vec<u8>, u64)> {
        let align = self.alignment()?;
        let mut out = Vec::new();
        out.extend_from_slice(GGUF_MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        for (k, v) in &self.kvs {
            put_str(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut out, v);
        }
        let mut off = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&(t.ty as u32).to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
            off = (off + t.n_bytes).next_multiple_of(align);
        }
        let padded = (out.len() as u64).next_multiple_of(align);
        out.resize(padded as usize, 0);
        Ok((out, align))
    }

    /// Serializes the whole file into memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_to(&mut out, "<memory>", &mut |i: usize| {
            Err(Error::InvalidInput(format!(
                "tensor '{}' has no data",
                self.tensors[i].name
            )))
        })?;
        Ok(out)
    }

    fn write_to<W: Write>(
        &self,
        w: &mut W,
        path: &str,
        produce: &mut dyn FnMut(usize) -> Result<Vec<u8>>,
    ) -> Result<()> {
        let (header, align) = self.header()?;
        let io = |e| Error::io(path, e);
        w.write_all(&header).map_err(io)?;
        let zeros = vec![0u8; align as usize];
        for (i, t) in self.tensors.iter().enumerate() {
            let produced;
            let data: &[u8] = match &t.data {
                Some(d) => d,
                None => {
                    produced = produce(i)?;
                    &produced
                }
            };
            if data.len() as u64 != t.n_bytes {
                return Err(Error::InvalidInput(format!(
                    "tensor '{}' data has {} bytes, expected {}",
                    t.name,
                    data.len(),
                    t.n_bytes
                )));
            }
            w.write_all(data).map_err(io)?;
            let pad = t.n_bytes.next_multiple_of(align) - t.n_bytes;
            w.write_all(&zeros[..pad as usize]).map_err(io)?;
        }
        Ok(())
    }

    /// Writes the file to `path` (every tensor must have been added with data).
    pub fn write(&self, path: &Path) -> Result<()> {
        self.write_streaming(path, |i| {
            Err(Error::InvalidInput(format!(
                "tensor '{}' has no data",
                self.tensors[i].name
            )))
        })
    }

    /// Writes the file to `path`, calling `produce(i)` for the data of the i-th tensor (in
    /// insertion order) when it was added with [`GgufWriter::add_tensor_info`].
    pub fn write_streaming(
        &self,
        path: &Path,
        mut produce: impl FnMut(usize) -> Result<Vec<u8>>,
    ) -> Result<()> {
        let p = path.display().to_string();
        let f = std::fs::File::create(path).map_err(|e| Error::io(&p, e))?;
        let mut w = std::io::BufWriter::new(f);
        self.write_to(&mut w, &p, &mut produce)?;
        w.flush().map_err(|e| Error::io(&p, e))
    }
}
