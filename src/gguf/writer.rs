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
    data: Vec<u8>,
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
        if dims.len() > MAX_DIMS as usize {
            return Err(Error::InvalidInput(format!(
                "tensor '{name}' has {} dimensions (max {MAX_DIMS})",
                dims.len()
            )));
        }
        let row = dims.first().copied().unwrap_or(1);
        let rows = dims.iter().skip(1).try_fold(1u64, |a, &d| a.checked_mul(d));
        let need = ty
            .row_bytes(row)
            .and_then(|rb| rows.and_then(|r| rb.checked_mul(r)))
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "tensor '{name}' dims {dims:?} do not fit type {ty} (block size {})",
                    ty.block_elems()
                ))
            })?;
        if need != data.len() as u64 {
            return Err(Error::InvalidInput(format!(
                "tensor '{name}' dims {dims:?} of type {ty} need {need} bytes, got {}",
                data.len()
            )));
        }
        if !self.names.insert(name.clone()) {
            return Err(Error::InvalidInput(format!(
                "duplicate tensor name '{name}'"
            )));
        }
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ty,
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
            off = (off + t.data.len() as u64).next_multiple_of(align);
        }
        let padded = (out.len() as u64).next_multiple_of(align);
        out.resize(padded as usize, 0);
        Ok((out, align))
    }

    /// Serializes the whole file into memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .map_err(|e| Error::io("<memory>", e))
            .and_then(|r| r)?;
        Ok(out)
    }

    fn write_to<W: Write>(&self, w: &mut W) -> std::io::Result<Result<()>> {
        let (header, align) = match self.header() {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        w.write_all(&header)?;
        let zeros = vec![0u8; align as usize];
        for t in &self.tensors {
            w.write_all(&t.data)?;
            let pad = (t.data.len() as u64).next_multiple_of(align) - t.data.len() as u64;
            w.write_all(&zeros[..pad as usize])?;
        }
        Ok(Ok(()))
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let p = path.display().to_string();
        let f = std::fs::File::create(path).map_err(|e| Error::io(&p, e))?;
        let mut w = std::io::BufWriter::new(f);
        self.write_to(&mut w).map_err(|e| Error::io(&p, e))??;
        w.flush().map_err(|e| Error::io(&p, e))
    }
}
