//! Typed reads and writes of the 256-byte data union, keeping the bytes a message does not
//! interpret (its residue).

use super::{CodecError, UNION, Wire};
use crate::msg::{Residue, UNION_LEN};

/// Reads typed fields out of the union, zeroing each byte it interprets in a copy, so
/// that what is left over is the message's [`Residue`].
pub(super) struct UnionReader {
    bytes: [u8; UNION_LEN],
    left: [u8; UNION_LEN],
}

impl UnionReader {
    pub(super) fn new(w: &Wire) -> Self {
        let mut bytes = [0u8; UNION_LEN];
        bytes.copy_from_slice(&w[UNION..]);
        UnionReader { bytes, left: bytes }
    }

    pub(super) fn take<const N: usize>(&mut self, off: usize) -> [u8; N] {
        self.left[off..off + N].fill(0);
        self.bytes[off..off + N]
            .try_into()
            .expect("N-byte range inside the union")
    }

    pub(super) fn u32(&mut self, off: usize) -> u32 {
        u32::from_le_bytes(self.take(off))
    }

    pub(super) fn i32(&mut self, off: usize) -> i32 {
        i32::from_le_bytes(self.take(off))
    }

    pub(super) fn i64(&mut self, off: usize) -> i64 {
        i64::from_le_bytes(self.take(off))
    }

    /// The bytes up to the first NUL within `len`, and whether a NUL was found.
    pub(super) fn raw_cstr(&mut self, off: usize, len: usize) -> (Vec<u8>, bool) {
        let field = &self.bytes[off..off + len];
        match field.iter().position(|&b| b == 0) {
            Some(n) => {
                self.left[off..=off + n].fill(0);
                (field[..n].to_vec(), true)
            }
            None => {
                self.left[off..off + len].fill(0);
                (field.to_vec(), false)
            }
        }
    }

    /// A NUL-terminated UTF-8 string the receiver acts on.
    pub(super) fn cstr(
        &mut self,
        off: usize,
        len: usize,
        field: &'static str,
    ) -> Result<String, CodecError> {
        let (raw, terminated) = self.raw_cstr(off, len);
        if !terminated {
            return Err(CodecError::Unterminated(field));
        }
        String::from_utf8(raw).map_err(|_| CodecError::NotUtf8(field))
    }

    pub(super) fn residue(self) -> Residue {
        Residue(self.left)
    }
}

/// Writes typed fields over a message's residue.
pub(super) struct UnionWriter {
    pub(super) bytes: [u8; UNION_LEN],
}

impl UnionWriter {
    pub(super) fn new(residue: &Residue) -> Self {
        UnionWriter { bytes: residue.0 }
    }

    pub(super) fn put(&mut self, off: usize, b: &[u8]) {
        self.bytes[off..off + b.len()].copy_from_slice(b);
    }

    pub(super) fn u32(&mut self, off: usize, v: u32) {
        self.put(off, &v.to_le_bytes());
    }

    pub(super) fn i32(&mut self, off: usize, v: i32) {
        self.put(off, &v.to_le_bytes());
    }

    pub(super) fn i64(&mut self, off: usize, v: i64) {
        self.put(off, &v.to_le_bytes());
    }

    /// Writes `s` and its NUL; `s` must leave room for the NUL.
    pub(super) fn cstr(
        &mut self,
        off: usize,
        len: usize,
        s: &[u8],
        field: &'static str,
    ) -> Result<(), CodecError> {
        if s.contains(&0) {
            return Err(CodecError::InteriorNul(field));
        }
        if s.len() >= len {
            return Err(CodecError::TooLong {
                field,
                len: s.len(),
                max: len - 1,
            });
        }
        self.put(off, s);
        self.bytes[off + s.len()] = 0;
        Ok(())
    }

    /// Writes raw name bytes: NUL-terminated if shorter than the field, else filling it.
    pub(super) fn raw_name(
        &mut self,
        off: usize,
        len: usize,
        s: &[u8],
        field: &'static str,
    ) -> Result<(), CodecError> {
        if s.len() > len {
            return Err(CodecError::TooLong {
                field,
                len: s.len(),
                max: len,
            });
        }
        if s.contains(&0) {
            return Err(CodecError::InteriorNul(field));
        }
        self.put(off, s);
        if s.len() < len {
            self.bytes[off + s.len()] = 0;
        }
        Ok(())
    }
}
