//! The relay's bodies: where an answer body ends, followed as its bytes
//! pass (a length, chunks and trailers, or the origin's close).

use super::answer::Framing;

/// Follows an answer body as its bytes pass, to tell where it ends.
pub(super) struct Body {
    framing: Framing,
    /// Bytes left of a `Content-Length` body, or of the current chunk's data.
    left: u64,
    chunk: Chunk,
    /// Length of the current size or trailer line (bounded).
    line: usize,
}

/// Where a chunked body stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Chunk {
    /// In a chunk-size line (digits, then maybe an extension).
    Size {
        digits: bool,
        ext: bool,
    },
    /// The size line's LF.
    SizeLf,
    /// Chunk data (`left` bytes to go).
    Data,
    /// The CR, then the LF, after the data.
    DataCr,
    DataLf,
    /// In the trailer section, at the start of a line (`true`) or in one.
    Trailer {
        at_start: bool,
    },
    /// The LF of a trailer line, or of the last (empty) line.
    TrailerLf {
        last: bool,
    },
    /// The body has ended.
    Done,
    /// Malformed: relayed no further.
    Broken,
}

/// Longest chunk-size or trailer line followed.
const MAX_LINE: usize = 8 * 1024;

impl Body {
    pub(super) fn new(framing: Framing) -> Body {
        Body {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunk: Chunk::Size {
                digits: false,
                ext: false,
            },
            line: 0,
        }
    }

    /// Follows `bytes`: how many of them belong to the body, and whether
    /// it has ended with them. A malformed chunked body counts as ended
    /// where it broke and the caller stops relaying (the visitor's
    /// connection ends, as with hyper).
    pub(super) fn feed(&mut self, bytes: &[u8]) -> (usize, bool) {
        match self.framing {
            Framing::Empty => (0, true),
            Framing::Close => (bytes.len(), false),
            Framing::Length(_) => {
                let take = (bytes.len() as u64).min(self.left);
                self.left -= take;
                (take as usize, self.left == 0)
            }
            Framing::Chunked => self.feed_chunked(bytes),
        }
    }

    /// Whether the body broke its framing (a malformed chunk): it ended
    /// there, and neither connection may carry another message.
    pub(super) fn broken(&self) -> bool {
        self.chunk == Chunk::Broken
    }

    fn feed_chunked(&mut self, bytes: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < bytes.len() {
            if matches!(self.chunk, Chunk::Data) {
                let take = (self.left).min((bytes.len() - i) as u64) as usize;
                i += take;
                self.left -= take as u64;
                if self.left == 0 {
                    self.chunk = Chunk::DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.chunk = self.step(b);
            match self.chunk {
                Chunk::Done => return (i, true),
                Chunk::Broken => return (i, true),
                _ => {}
            }
        }
        (i, false)
    }

    /// One byte outside chunk data.
    fn step(&mut self, b: u8) -> Chunk {
        let long = |line: &mut usize| {
            *line += 1;
            *line > MAX_LINE
        };
        match self.chunk {
            Chunk::Size { digits, ext } => {
                if long(&mut self.line) {
                    return Chunk::Broken;
                }
                match b {
                    b'\r' if digits => Chunk::SizeLf,
                    _ if ext => Chunk::Size { digits, ext },
                    b';' | b' ' | b'\t' if digits => Chunk::Size { digits, ext: true },
                    _ => match (b as char).to_digit(16) {
                        Some(d) if self.left >> 60 == 0 => {
                            self.left = self.left * 16 + u64::from(d);
                            Chunk::Size { digits: true, ext }
                        }
                        _ => Chunk::Broken,
                    },
                }
            }
            Chunk::SizeLf if b == b'\n' => {
                self.line = 0;
                if self.left == 0 {
                    Chunk::Trailer { at_start: true }
                } else {
                    Chunk::Data
                }
            }
            Chunk::DataCr if b == b'\r' => Chunk::DataLf,
            Chunk::DataLf if b == b'\n' => Chunk::Size {
                digits: false,
                ext: false,
            },
            Chunk::Trailer { at_start } => {
                if long(&mut self.line) {
                    return Chunk::Broken;
                }
                match b {
                    b'\r' => Chunk::TrailerLf { last: at_start },
                    _ => Chunk::Trailer { at_start: false },
                }
            }
            Chunk::TrailerLf { last } if b == b'\n' => {
                self.line = 0;
                if last {
                    Chunk::Done
                } else {
                    Chunk::Trailer { at_start: true }
                }
            }
            _ => Chunk::Broken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&[u8]]) -> (usize, bool) {
        let mut b = Body::new(Framing::Chunked);
        let mut total = 0;
        for p in parts {
            let (take, done) = b.feed(p);
            total += take;
            if done {
                return (total, b.chunk == Chunk::Done);
            }
        }
        (total, false)
    }

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_and_trailers() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-Sum: 1\r\n\r\nNEXT";
        assert_eq!(chunked(&[body]), (body.len() - 4, true));
        // Split at every byte: the same end.
        for at in 1..body.len() - 4 {
            let (a, b) = body.split_at(at);
            assert_eq!(chunked(&[a, b]), (body.len() - 4, true), "split at {at}");
        }
        let plain = b"A\r\n0123456789\r\n0\r\n\r\n";
        assert_eq!(chunked(&[plain]), (plain.len(), true));
    }

    #[test]
    fn a_malformed_chunked_body_is_relayed_no_further() {
        for bad in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"\r\n", b"5\nhello\r\n"] {
            let (_, clean) = chunked(&[bad]);
            assert!(!clean, "{:?}", String::from_utf8_lossy(bad));
            let mut b = Body::new(Framing::Chunked);
            let (_, done) = b.feed(bad);
            assert!(
                done && b.chunk == Chunk::Broken,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_sized_body_ends_at_its_length() {
        let mut b = Body::new(Framing::Length(5));
        assert_eq!(b.feed(b"hel"), (3, false));
        assert_eq!(b.feed(b"loGET"), (2, true));
        assert_eq!(Body::new(Framing::Empty).feed(b"x"), (0, true));
        assert_eq!(Body::new(Framing::Close).feed(b"xyz"), (3, false));
    }
}

#[cfg(test)]
mod hostile {
    use super::super::MadeUp;
    use super::*;

    /// Bytes an origin may send, made up: pieces of chunked framing and
    /// noise, cut anywhere. The follower never claims more bytes than it
    /// was given, and a body it calls ended stays within what came.
    #[test]
    fn any_bytes_in_any_pieces_are_followed_without_overrun() {
        let pieces: [&[u8]; 12] = [
            b"5\r\nhello\r\n",
            b"0\r\n\r\n",
            b"ffffffffffffffff\r\n",
            b"1;a=\"b\"\r\nx\r\n",
            b"X-T: 1\r\n",
            b"\r\n",
            b"\r",
            b"\n",
            b"zz",
            b"10\r\n",
            &[0, 255, 13, 10, 59],
            b"0\r\n",
        ];
        let mut made = MadeUp(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let input = made.pieced(&pieces, 12);
            for framing in [Framing::Chunked, Framing::Length(made.next() % 64)] {
                let mut body = Body::new(framing);
                let mut at = 0;
                while at < input.len() {
                    let cut = at + 1 + (made.next() as usize % (input.len() - at));
                    let piece = &input[at..cut];
                    let (take, done) = body.feed(piece);
                    assert!(take <= piece.len(), "{input:?}");
                    // Short of the piece only where the body ended.
                    assert!(done || take == piece.len(), "{input:?}");
                    at += take;
                    if done {
                        break;
                    }
                }
                assert!(at <= input.len());
            }
        }
    }
}
