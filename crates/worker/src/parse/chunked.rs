//! A chunked request body, decoded incrementally and strictly.

use super::{Limits, ParseError, is_tchar};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading hex digits of a chunk size (count of digits read so far).
    Size { digits: u8 },
    /// In a chunk extension, until CR.
    Ext,
    /// Expecting LF after the size line's CR.
    SizeLf,
    /// Chunk data, this many bytes left.
    Data(u64),
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    Trailer,
    /// Expecting LF after a trailer line's CR.
    TrailerLf,
    /// Expecting the final LF.
    EndLf,
    /// The body is complete.
    Done,
}

/// An incremental, strict decoder of a chunked request body.
///
/// Chunk sizes are 1 to 16 hex digits (overflow refused), extensions are
/// skipped (bounded), trailers are validated and dropped, every line ends
/// with CRLF.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
    /// Bytes of the current extension or trailer line.
    line: usize,
    /// Bytes of trailers so far.
    trailers: usize,
    max_line: usize,
    max_trailers: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new(&Limits::default())
    }
}

/// Progress of [`ChunkedDecoder::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes consumed.
    pub consumed: usize,
    /// The body ended (the last byte consumed is its final byte).
    pub done: bool,
}

impl ChunkedDecoder {
    /// A decoder whose extension and trailer lines are bounded by `limits`.
    pub fn new(limits: &Limits) -> ChunkedDecoder {
        let l = limits.normalized();
        ChunkedDecoder {
            state: ChunkState::Size { digits: 0 },
            size: 0,
            line: 0,
            trailers: 0,
            max_line: l.field_size,
            max_trailers: l.field_size.saturating_mul(l.fields.max(1)),
        }
    }

    /// Count one byte of a trailer field against the line and total limits.
    fn count_trailer_byte(&mut self) -> Result<(), ParseError> {
        self.line += 1;
        self.trailers += 1;
        if self.line > self.max_line || self.trailers > self.max_trailers {
            return Err(ParseError {
                status: 431,
                reason: "trailer fields too large",
            });
        }
        Ok(())
    }

    /// Whether the final chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decode from `input`, appending body data to `out` until the body ends
    /// or the input is used up.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Decoded, ParseError> {
        let bad = |reason| Err(ParseError::bad(reason));
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size { digits } => {
                    let v = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        b'A'..=b'F' => b - b'A' + 10,
                        b';' if digits > 0 => {
                            self.state = ChunkState::Ext;
                            self.line = 0;
                            i += 1;
                            continue;
                        }
                        b'\r' if digits > 0 => {
                            self.state = ChunkState::SizeLf;
                            i += 1;
                            continue;
                        }
                        _ => return bad("invalid chunk size"),
                    };
                    // Leading zeros are allowed (a few), overflow is not.
                    if self.size > (u64::MAX >> 4) || digits >= 32 {
                        return bad("chunk size too large");
                    }
                    self.size = (self.size << 4) | u64::from(v);
                    self.state = ChunkState::Size { digits: digits + 1 };
                    i += 1;
                }
                ChunkState::Ext => {
                    match b {
                        b'\r' => self.state = ChunkState::SizeLf,
                        b'\n' | 0 => return bad("invalid chunk extension"),
                        _ => {
                            self.line += 1;
                            if self.line > self.max_line {
                                return bad("chunk extension too long");
                            }
                        }
                    }
                    i += 1;
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return bad("invalid chunk size line");
                    }
                    i += 1;
                    if self.size == 0 {
                        self.state = ChunkState::TrailerStart;
                    } else {
                        self.state = ChunkState::Data(self.size);
                    }
                    self.size = 0;
                }
                ChunkState::Data(left) => {
                    let n = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return bad("missing CRLF after chunk data");
                    }
                    self.state = ChunkState::DataLf;
                    i += 1;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return bad("missing CRLF after chunk data");
                    }
                    self.state = ChunkState::Size { digits: 0 };
                    i += 1;
                }
                ChunkState::TrailerStart => {
                    match b {
                        b'\r' => self.state = ChunkState::EndLf,
                        b' ' | b'\t' => return bad("obsolete line folding in trailer"),
                        _ if is_tchar(b) => {
                            self.state = ChunkState::TrailerName;
                            self.line = 1;
                            self.trailers += 1;
                        }
                        _ => return bad("invalid trailer field"),
                    }
                    i += 1;
                }
                ChunkState::TrailerName => {
                    match b {
                        b':' => self.state = ChunkState::Trailer,
                        _ if is_tchar(b) => {}
                        _ => return bad("invalid trailer field"),
                    }
                    self.count_trailer_byte()?;
                    i += 1;
                }
                ChunkState::Trailer => {
                    match b {
                        b'\r' => self.state = ChunkState::TrailerLf,
                        // A tab is a byte of the line like any other.
                        b'\t' => self.count_trailer_byte()?,
                        _ if b < 0x20 || b == 0x7f => return bad("invalid trailer field"),
                        _ => self.count_trailer_byte()?,
                    }
                    i += 1;
                }
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return bad("invalid trailer field");
                    }
                    self.state = ChunkState::TrailerStart;
                    i += 1;
                }
                ChunkState::EndLf => {
                    if b != b'\n' {
                        return bad("invalid end of chunked body");
                    }
                    self.state = ChunkState::Done;
                    i += 1;
                    return Ok(Decoded {
                        consumed: i,
                        done: true,
                    });
                }
                ChunkState::Done => {
                    return Ok(Decoded {
                        consumed: i,
                        done: true,
                    });
                }
            }
        }
        Ok(Decoded {
            consumed: i,
            done: self.state == ChunkState::Done,
        })
    }
}
