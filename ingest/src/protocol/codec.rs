//! Byte-level reading and writing of frames: the 8-byte frame header, and
//! little-endian fixed-width fields and length-prefixed strings inside a
//! payload. Everything here works on slices, so a decoder can run straight
//! on the bytes QUIC handed over (no copy into an intermediate buffer).

use super::{FRAME_HEADER_LEN, FrameType};

/// Why a frame or payload could not be decoded. Each maps to a wire error
/// code ([`super::ErrorCode`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload ends early (needs {needed} more bytes)")]
    Truncated { needed: usize },
    #[error("{0} bytes after the last field")]
    Trailing(usize),
    #[error("{what} is not valid UTF-8")]
    BadUtf8 { what: &'static str },
    #[error("{what} too long ({len} > {max})")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("bad {0}")]
    BadValue(&'static str),
    #[error("unknown frame type 0x{0:04x}")]
    UnknownType(u16),
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { len: usize, max: usize },
    #[error("reserved header bits set")]
    ReservedBits,
}

/// The fixed header in front of every frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload bytes after the header.
    pub len: u32,
    pub kind: u16,
}

impl FrameHeader {
    /// Parses the 8 header bytes, checking the payload length against `max`.
    pub fn parse(b: &[u8; FRAME_HEADER_LEN], max: usize) -> Result<Self, DecodeError> {
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let kind = u16::from_le_bytes([b[4], b[5]]);
        let flags = u16::from_le_bytes([b[6], b[7]]);
        if flags != 0 {
            return Err(DecodeError::ReservedBits);
        }
        if len as usize > max {
            return Err(DecodeError::FrameTooLarge {
                len: len as usize,
                max,
            });
        }
        Ok(Self { len, kind })
    }
}

/// A whole frame found at the front of a buffer: header, payload, bytes used.
pub type SplitFrame<'a> = (FrameHeader, &'a [u8], usize);

/// Splits complete frames off the front of a byte buffer (datagrams, and
/// tests that feed arbitrary bytes): `Ok(None)` when more bytes are needed.
pub fn split_frame(buf: &[u8], max: usize) -> Result<Option<SplitFrame<'_>>, DecodeError> {
    let Some(head) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(None);
    };
    let h = FrameHeader::parse(head, max)?;
    let end = FRAME_HEADER_LEN + h.len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((h, &buf[FRAME_HEADER_LEN..end], end)))
}

/// A cursor over one frame's payload.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

macro_rules! read_le {
    ($name:ident, $t:ty) => {
        pub fn $name(&mut self) -> Result<$t, DecodeError> {
            Ok(<$t>::from_le_bytes(self.array()?))
        }
    };
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    read_le!(u8, u8);
    read_le!(u16, u16);
    read_le!(u32, u32);
    read_le!(u64, u64);
    read_le!(i32, i32);
    read_le!(i64, i64);
    read_le!(f32, f32);
    read_le!(f64, f64);

    /// A `u16` byte length, then that many bytes of UTF-8.
    pub fn str(&mut self, what: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        std::str::from_utf8(self.bytes(len)?).map_err(|_| DecodeError::BadUtf8 { what })
    }

    /// A `u32` byte length, then that many bytes of UTF-8: a document (a
    /// GeoJSON file) rather than a name.
    pub fn text(&mut self, what: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        std::str::from_utf8(self.bytes(len)?).map_err(|_| DecodeError::BadUtf8 { what })
    }

    /// A `u32` element count, refused above `max` and above what the rest of
    /// the payload could hold at `min_size` bytes per element (so a forged
    /// count never makes the decoder reserve memory).
    pub fn count(
        &mut self,
        what: &'static str,
        max: usize,
        min_size: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::TooLong { what, len: n, max });
        }
        if n.saturating_mul(min_size) > self.remaining() {
            return Err(DecodeError::Truncated {
                needed: n * min_size - self.remaining(),
            });
        }
        Ok(n)
    }

    /// Succeeds only if the payload was consumed exactly.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

/// Appends one frame to a buffer: header, then whatever the closure writes.
pub fn write_frame(out: &mut Vec<u8>, kind: FrameType, body: impl FnOnce(&mut Writer<'_>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    body(&mut Writer { out });
    let len = (out.len() - start - FRAME_HEADER_LEN) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 6].copy_from_slice(&(kind as u16).to_le_bytes());
}

/// Appends little-endian fields to a frame being written.
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

macro_rules! write_le {
    ($name:ident, $t:ty) => {
        pub fn $name(&mut self, v: $t) -> &mut Self {
            self.out.extend_from_slice(&v.to_le_bytes());
            self
        }
    };
}

impl Writer<'_> {
    write_le!(u8, u8);
    write_le!(u16, u16);
    write_le!(u32, u32);
    write_le!(u64, u64);
    write_le!(i32, i32);
    write_le!(i64, i64);
    write_le!(f32, f32);
    write_le!(f64, f64);

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }

    /// A string, cut at a character boundary to fit the `u16` length.
    pub fn str(&mut self, s: &str) -> &mut Self {
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.bytes(&s.as_bytes()[..end])
    }

    pub fn count(&mut self, n: usize) -> &mut Self {
        self.u32(n as u32)
    }

    /// A document, with a `u32` length (a frame is far smaller).
    pub fn text(&mut self, s: &str) -> &mut Self {
        self.u32(s.len() as u32);
        self.bytes(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_lengths_are_checked() {
        let mut buf = Vec::new();
        write_frame(&mut buf, FrameType::Ok, |w| {
            w.u8(7).u16(300).u32(70_000).u64(u64::MAX).i32(-5).i64(-6);
            w.f32(1.5).f64(-2.25).str("héllo").count(2);
        });
        let (h, payload, used) = split_frame(&buf, 1024).unwrap().unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(h.kind, FrameType::Ok as u16);
        let mut r = Reader::new(payload);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 300);
        assert_eq!(r.u32().unwrap(), 70_000);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.i32().unwrap(), -5);
        assert_eq!(r.i64().unwrap(), -6);
        assert_eq!(r.f32().unwrap(), 1.5);
        assert_eq!(r.f64().unwrap(), -2.25);
        assert_eq!(r.str("s", 10).unwrap(), "héllo");
        // A count larger than the remaining bytes can hold is refused
        // before anything is reserved.
        assert!(matches!(
            r.count("n", 100, 8),
            Err(DecodeError::Truncated { .. })
        ));

        // Frames cut anywhere are incomplete, never misread.
        for cut in 0..buf.len() {
            assert_eq!(split_frame(&buf[..cut], 1024).unwrap(), None);
        }
        assert!(matches!(
            split_frame(&buf, 4),
            Err(DecodeError::FrameTooLarge { .. })
        ));
        let mut bad = buf.clone();
        bad[7] = 1;
        assert_eq!(split_frame(&bad, 1024), Err(DecodeError::ReservedBits));
    }

    #[test]
    fn strings_are_bounded_and_checked() {
        let mut buf = Vec::new();
        write_frame(&mut buf, FrameType::Ok, |w| {
            w.str("abcdef").u16(2).bytes(&[0xff, 0xfe]);
        });
        let (_, payload, _) = split_frame(&buf, 1024).unwrap().unwrap();
        let mut r = Reader::new(payload);
        assert!(matches!(r.str("ref", 3), Err(DecodeError::TooLong { .. })));
        let mut r = Reader::new(payload);
        r.str("ref", 10).unwrap();
        assert_eq!(
            r.str("note", 10),
            Err(DecodeError::BadUtf8 { what: "note" })
        );
        // A long string is cut at a character boundary, not mid-character.
        let long = "é".repeat(40_000);
        let mut buf = Vec::new();
        write_frame(&mut buf, FrameType::Ok, |w| {
            w.str(&long);
        });
        let (_, payload, _) = split_frame(&buf, 1 << 20).unwrap().unwrap();
        let s = Reader::new(payload)
            .str("s", usize::MAX)
            .unwrap()
            .to_string();
        assert!(s.len() <= u16::MAX as usize && s.chars().all(|c| c == 'é'));
    }
}
