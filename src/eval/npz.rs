//! NumPy `.npy` arrays and `.npz` archives (a zip of `.npy` files, as `np.savez` writes them):
//! the sample batches and reference batches of the ADM evaluator (`arr_0`: uint8
//! `[N, H, W, 3]`; reference batches may also hold `mu`, `sigma`, `mu_s`, `sigma_s`) and
//! pytorch-fid's statistics files (`mu`, `sigma`).
//!
//! Reading streams: images are handed out batch by batch, never the whole (possibly 10 GB)
//! array. Little-endian `u1`, `i8`, `f4`, `f8` in C order are supported; written archives are
//! uncompressed zip64 (`np.savez`), read ones may also be deflated (`np.savez_compressed`).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::error::{Error, Result};

/// Element types this module reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDtype {
    /// `|u1`
    U8,
    /// `<i8`
    I64,
    /// `<f4`
    F32,
    /// `<f8`
    F64,
}

impl NpyDtype {
    fn descr(self) -> &'static str {
        match self {
            Self::U8 => "|u1",
            Self::I64 => "<i8",
            Self::F32 => "<f4",
            Self::F64 => "<f8",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::F32 => 4,
            Self::I64 | Self::F64 => 8,
        }
    }

    fn parse(descr: &str) -> Option<Self> {
        match descr {
            "|u1" | "<u1" | "u1" => Some(Self::U8),
            "<i8" => Some(Self::I64),
            "<f4" => Some(Self::F32),
            "<f8" => Some(Self::F64),
            _ => None,
        }
    }
}

/// The header of an `.npy` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: NpyDtype,
    /// Shape (C order).
    pub shape: Vec<usize>,
}

impl NpyHeader {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encode as an `.npy` version 1.0 preamble (magic, length, dict padded to 64 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
        let mut dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", self.dtype.descr());
        while (10 + dict.len() + 1) % 64 != 0 {
            dict.push(' ');
        }
        dict.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        out.extend_from_slice(dict.as_bytes());
        out
    }

    /// Read a preamble from `r`, leaving it at the first data byte.
    pub fn read(r: &mut impl Read) -> std::result::Result<Self, String> {
        let mut pre = [0u8; 8];
        r.read_exact(&mut pre).map_err(|e| e.to_string())?;
        if &pre[..6] != b"\x93NUMPY" {
            return Err("not an .npy array (bad magic)".into());
        }
        let len = if pre[6] == 1 {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|e| e.to_string())?;
            u16::from_le_bytes(b) as usize
        } else {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|e| e.to_string())?;
            u32::from_le_bytes(b) as usize
        };
        let mut dict = vec![0u8; len];
        r.read_exact(&mut dict).map_err(|e| e.to_string())?;
        Self::parse_dict(&String::from_utf8_lossy(&dict))
    }

    fn parse_dict(dict: &str) -> std::result::Result<Self, String> {
        let field = |key: &str| -> std::result::Result<&str, String> {
            let at = dict.find(&format!("'{key}'")).ok_or_else(|| format!("header lacks `{key}`: {dict}"))?;
            let rest = dict[at + key.len() + 2..].trim_start();
            Ok(rest.strip_prefix(':').unwrap_or(rest).trim_start())
        };
        let descr = field("descr")?;
        let descr = descr.strip_prefix('\'').and_then(|d| d.split('\'').next()).ok_or("bad descr")?;
        let dtype = NpyDtype::parse(descr).ok_or_else(|| format!("unsupported dtype `{descr}` (u1, <i8, <f4, <f8)"))?;
        if field("fortran_order")?.starts_with("True") {
            return Err("Fortran-order arrays are not supported".into());
        }
        let shape = field("shape")?;
        let inner = shape.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or("bad shape")?;
        let shape = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end_matches('L').parse::<usize>().map_err(|e| format!("bad shape `{inner}`: {e}")))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self { dtype, shape })
    }
}

/// Bytes of `f64` values as `dtype` values (little-endian).
fn to_f64(bytes: &[u8], dtype: NpyDtype) -> Vec<f64> {
    let n = dtype.size();
    bytes
        .chunks_exact(n)
        .map(|c| match dtype {
            NpyDtype::U8 => c[0] as f64,
            NpyDtype::I64 => i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64,
            NpyDtype::F32 => f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64,
            NpyDtype::F64 => f64::from_le_bytes(c.try_into().expect("8 bytes")),
        })
        .collect()
}

/// A `.npz` archive open for reading.
pub struct NpzReader {
    path: PathBuf,
    archive: ZipArchive<BufReader<File>>,
}

impl NpzReader {
    /// Open `path`.
    ///
    /// # Errors
    /// [`Error::Io`] if it is missing or not a zip archive.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::Io { path: path.clone(), reason: e.to_string() })?;
        let archive = ZipArchive::new(BufReader::new(file)).map_err(|e| Error::Io { path: path.clone(), reason: e.to_string() })?;
        Ok(Self { path, archive })
    }

    fn err(&self, reason: impl ToString) -> Error {
        Error::Io { path: self.path.clone(), reason: reason.to_string() }
    }

    /// The array names (`arr_0`, `mu`, ...; without `.npy`).
    pub fn names(&self) -> Vec<String> {
        self.archive.file_names().filter_map(|n| n.ok()).map(|n| n.trim_end_matches(".npy").to_string()).collect()
    }

    /// Whether the archive holds array `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.names().iter().any(|n| n == name)
    }

    /// The header of array `name`.
    ///
    /// # Errors
    /// [`Error::Io`] if it is missing or malformed.
    pub fn header(&mut self, name: &str) -> Result<NpyHeader> {
        let mut entry = self.archive.by_name(&format!("{name}.npy")).map_err(|e| Error::Io {
            path: self.path.clone(),
            reason: format!("no array `{name}`: {e}"),
        })?;
        NpyHeader::read(&mut entry).map_err(|e| Error::Io { path: self.path.clone(), reason: format!("{name}: {e}") })
    }

    /// Array `name` as `f64` values (any supported dtype) with its shape.
    ///
    /// # Errors
    /// [`Error::Io`] if it is missing, malformed or truncated.
    pub fn read_f64(&mut self, name: &str) -> Result<(Vec<f64>, Vec<usize>)> {
        let path = self.path.clone();
        let io = |reason: String| Error::Io { path: path.clone(), reason };
        let mut entry =
            self.archive.by_name(&format!("{name}.npy")).map_err(|e| io(format!("no array `{name}`: {e}")))?;
        let header = NpyHeader::read(&mut entry).map_err(|e| io(format!("{name}: {e}")))?;
        let mut bytes = vec![0u8; header.len() * header.dtype.size()];
        entry.read_exact(&mut bytes).map_err(|e| io(format!("{name}: truncated data: {e}")))?;
        Ok((to_f64(&bytes, header.dtype), header.shape))
    }

    /// Stream the uint8 images `[N, H, W, 3]` of array `name` in batches of up to `batch_size`:
    /// `f(bytes, n)` gets `n` images of `H * W * 3` bytes each. Returns `[N, H, W]`.
    ///
    /// # Errors
    /// [`Error::Io`] for a missing, malformed or truncated array, or one that is not uint8
    /// `[N, H, W, 3]`; any error of `f`.
    pub fn for_each_image_batch(
        &mut self,
        name: &str,
        batch_size: usize,
        mut f: impl FnMut(&[u8], usize) -> Result<()>,
    ) -> Result<[usize; 3]> {
        let header = self.header(name)?;
        let shape = header.shape.clone();
        if header.dtype != NpyDtype::U8 || shape.len() != 4 || shape[3] != 3 {
            return Err(self.err(format!("`{name}` must be uint8 [N, H, W, 3] images, got {:?} {shape:?}", header.dtype)));
        }
        let (n, per) = (shape[0], shape[1] * shape[2] * 3);
        let path = self.path.clone();
        let mut entry = self.archive.by_name(&format!("{name}.npy")).map_err(|e| Error::Io { path: path.clone(), reason: e.to_string() })?;
        NpyHeader::read(&mut entry).map_err(|e| Error::Io { path: path.clone(), reason: e })?;
        let mut buf = vec![0u8; batch_size.max(1) * per];
        let mut done = 0;
        while done < n {
            let k = batch_size.max(1).min(n - done);
            entry
                .read_exact(&mut buf[..k * per])
                .map_err(|e| Error::Io { path: path.clone(), reason: format!("{name}: truncated after {done} images: {e}") })?;
            f(&buf[..k * per], k)?;
            done += k;
        }
        Ok([n, shape[1], shape[2]])
    }
}

/// An `.npz` archive being written (uncompressed, zip64), array by array.
pub struct NpzWriter {
    path: PathBuf,
    zip: ZipWriter<BufWriter<File>>,
}

impl NpzWriter {
    /// Create (or truncate) `path`.
    ///
    /// # Errors
    /// [`Error::Write`] if it cannot be created.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|e| Error::Write { path: path.clone(), reason: e.to_string() })?;
        Ok(Self { path, zip: ZipWriter::new(BufWriter::new(file)) })
    }

    fn err(&self, reason: impl ToString) -> Error {
        Error::Write { path: self.path.clone(), reason: reason.to_string() }
    }

    /// Start array `name` with `header`; then call [`write`](Self::write) with exactly its data
    /// bytes (little-endian, C order).
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O failure.
    pub fn start_array(&mut self, name: &str, header: &NpyHeader) -> Result<()> {
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored).large_file(true);
        self.zip.start_file(format!("{name}.npy"), options).map_err(|e| self.err(e))?;
        let pre = header.encode();
        self.write(&pre)
    }

    /// Append data bytes to the current array.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O failure.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.zip.write_all(bytes).map_err(|e| Error::Write { path: self.path.clone(), reason: e.to_string() })
    }

    /// A whole `f64` array.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O failure.
    pub fn write_f64(&mut self, name: &str, values: &[f64], shape: &[usize]) -> Result<()> {
        self.start_array(name, &NpyHeader { dtype: NpyDtype::F64, shape: shape.to_vec() })?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(&bytes)
    }

    /// A whole `i64` array.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O failure.
    pub fn write_i64(&mut self, name: &str, values: &[i64], shape: &[usize]) -> Result<()> {
        self.start_array(name, &NpyHeader { dtype: NpyDtype::I64, shape: shape.to_vec() })?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(&bytes)
    }

    /// Write the zip directory and close the file.
    ///
    /// # Errors
    /// [`Error::Write`] on an I/O failure.
    pub fn finish(self) -> Result<()> {
        let path = self.path.clone();
        let w = self.zip.finish().map_err(|e| Error::Write { path: path.clone(), reason: e.to_string() })?;
        w.into_inner().map_err(|e| Error::Write { path, reason: e.to_string() })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_numpy_dicts() {
        let h = NpyHeader { dtype: NpyDtype::U8, shape: vec![5, 4, 3, 3] };
        let enc = h.encode();
        assert_eq!(enc.len() % 64, 0);
        assert_eq!(NpyHeader::read(&mut &enc[..]).unwrap(), h);
        let one = NpyHeader { dtype: NpyDtype::F64, shape: vec![7] };
        assert_eq!(NpyHeader::read(&mut &one.encode()[..]).unwrap(), one);
        // as NumPy writes them, with other spacing and field orders
        let p = NpyHeader::parse_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2048, 2048), }").unwrap();
        assert_eq!((p.dtype, p.shape), (NpyDtype::F32, vec![2048, 2048]));
        let p = NpyHeader::parse_dict("{'shape': (), 'fortran_order': False, 'descr': '<f8'}").unwrap();
        assert!(p.shape.is_empty() && p.len() == 1);
        assert!(NpyHeader::parse_dict("{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }").is_err());
        assert!(NpyHeader::parse_dict("{'descr': '<f8', 'fortran_order': True, 'shape': (2,), }").is_err());
        assert!(NpyHeader::read(&mut &b"garbage!!!"[..]).is_err());
    }

    #[test]
    fn npz_roundtrip_streams_images() {
        let dir = std::env::temp_dir().join(format!("dt_npz_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.npz");
        let images: Vec<u8> = (0..5 * 2 * 3 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let mut w = NpzWriter::create(&path).unwrap();
        w.start_array("arr_0", &NpyHeader { dtype: NpyDtype::U8, shape: vec![5, 2, 3, 3] }).unwrap();
        w.write(&images[..40]).unwrap();
        w.write(&images[40..]).unwrap();
        w.write_f64("mu", &[1.5, -2.0], &[2]).unwrap();
        w.write_i64("arr_1", &[3, 1, 4, 1, 5], &[5]).unwrap();
        w.finish().unwrap();

        let mut r = NpzReader::open(&path).unwrap();
        let mut names = r.names();
        names.sort();
        assert_eq!(names, ["arr_0", "arr_1", "mu"]);
        assert_eq!(r.read_f64("mu").unwrap(), (vec![1.5, -2.0], vec![2]));
        assert_eq!(r.read_f64("arr_1").unwrap().0, vec![3.0, 1.0, 4.0, 1.0, 5.0]);
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        let dims = r
            .for_each_image_batch("arr_0", 2, |b, n| {
                got.extend_from_slice(b);
                sizes.push(n);
                Ok(())
            })
            .unwrap();
        assert_eq!((dims, got, sizes), ([5, 2, 3], images, vec![2, 2, 1]));
        assert!(r.for_each_image_batch("mu", 2, |_, _| Ok(())).is_err());
        assert!(r.read_f64("nope").unwrap_err().to_string().contains("no array `nope`"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
