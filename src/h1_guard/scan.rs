//! The incremental scanner: a small state machine fed with each newly read slice of the
//! connection. It validates request heads line by line, skips Content-Length bodies without
//! looking at them, walks chunked framing to find the next head, and records verdicts.
//!
//! Memory: the only buffer is the current partial line, and every line-oriented section
//! (head, chunk-size line, trailer section) has a byte budget of `max_head_bytes` that is
//! charged before anything is buffered.

use std::mem;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::syntax;
use super::{GuardLimits, Rejection, Verdicts};

/// The HTTP/2 connection preface (RFC 9113 §3.4): h2c with prior knowledge.
pub(super) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// At the start of the connection: this many bytes matched the h2 preface so far.
    Preface(usize),
    /// Line-oriented parsing of one section.
    Lines(Section),
    /// Inside a Content-Length body: bytes left.
    Body(u64),
    /// Inside chunk data: bytes left, then CRLF.
    ChunkData(u64),
    ChunkCr,
    ChunkLf,
    /// Passthrough (h2, upgrade, CONNECT) or rejected: nothing more is scanned.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Section {
    Head,
    ChunkSize,
    Trailer,
}

impl Section {
    /// Why a line of this section is refused when it is too long or lacks its CR. Body-level
    /// faults get body-level reasons: they flag the next request, whose head may be fine.
    fn framing_fault(self, too_long: bool) -> Rejection {
        match (self, too_long) {
            (Section::Head, true) => Rejection::HeadTooLarge,
            (Section::Head, false) => Rejection::BareLf,
            (Section::ChunkSize, _) => Rejection::BadChunkSize,
            (Section::Trailer, _) => Rejection::BadTrailer,
        }
    }
}

/// Facts gathered from the head being scanned.
#[derive(Default)]
struct Head {
    started: bool,
    http11: bool,
    /// `Upgrade` header or CONNECT: after this head the bytes may not be HTTP/1.
    upgrade: bool,
    content_length: Option<u64>,
    chunked: bool,
}

pub(super) struct Scanner {
    limits: GuardLimits,
    verdicts: Arc<Verdicts>,
    pub(super) phase: Phase,
    /// The current line when it spans reads; empty otherwise.
    pub(super) line: Vec<u8>,
    /// Bytes the current section may still use.
    budget: usize,
    /// Field lines in the current head or trailer section.
    fields: usize,
    head: Head,
    /// Heads that passed so far (published to the handle).
    pub(super) ok_heads: u64,
}

impl Scanner {
    pub(super) fn new(limits: GuardLimits, verdicts: Arc<Verdicts>) -> Self {
        Self {
            limits,
            verdicts,
            phase: Phase::Preface(0),
            line: Vec::new(),
            budget: limits.max_head_bytes,
            fields: 0,
            head: Head::default(),
            ok_heads: 0,
        }
    }

    /// Scans bytes just read from the connection.
    pub(super) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            data = match self.phase {
                Phase::Done => return,
                Phase::Preface(matched) => self.preface(matched, data),
                Phase::Lines(section) => self.lines(section, data),
                Phase::Body(left) | Phase::ChunkData(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    let left = left - n as u64;
                    self.phase = match (self.phase, left) {
                        (Phase::Body(_), 0) => self.start_head(),
                        (Phase::Body(_), _) => Phase::Body(left),
                        (_, 0) => Phase::ChunkCr,
                        (_, _) => Phase::ChunkData(left),
                    };
                    &data[n..]
                }
                Phase::ChunkCr | Phase::ChunkLf => {
                    let (want, next) = match self.phase {
                        Phase::ChunkCr => (b'\r', Phase::ChunkLf),
                        _ => (b'\n', self.start_section(Section::ChunkSize)),
                    };
                    if data[0] != want {
                        self.reject(Rejection::BadChunkData);
                        return;
                    }
                    self.phase = next;
                    &data[1..]
                }
            };
        }
    }

    fn preface<'a>(&mut self, matched: usize, data: &'a [u8]) -> &'a [u8] {
        let want = &H2_PREFACE[matched..];
        let n = want.len().min(data.len());
        if data[..n] == want[..n] {
            self.phase = if n == want.len() {
                self.stop()
            } else {
                Phase::Preface(matched + n)
            };
            return &data[n..];
        }
        // Not h2: the bytes held back as a possible preface start the first head.
        self.phase = self.start_head();
        self.feed(&H2_PREFACE[..matched]);
        data
    }

    fn lines<'a>(&mut self, section: Section, data: &'a [u8]) -> &'a [u8] {
        let (taken, complete) = match memchr::memchr(b'\n', data) {
            Some(i) => (&data[..=i], true),
            None => (data, false),
        };
        if taken.len() > self.budget {
            self.reject(section.framing_fault(true));
            return &[];
        }
        self.budget -= taken.len();
        if !complete {
            self.line.extend_from_slice(taken);
        } else if self.line.is_empty() {
            self.on_line(section, taken);
        } else {
            let mut line = mem::take(&mut self.line);
            line.extend_from_slice(taken);
            self.on_line(section, &line);
            line.clear();
            // A rejection or passthrough has dropped the buffer for good; keep it dropped.
            if self.phase != Phase::Done {
                self.line = line;
            }
        }
        &data[taken.len()..]
    }

    fn on_line(&mut self, section: Section, raw: &[u8]) {
        let Some(line) = raw.strip_suffix(b"\r\n") else {
            return self.reject(section.framing_fault(false));
        };
        let result = match section {
            Section::Head => self.head_line(line),
            Section::ChunkSize => self.chunk_size_line(line),
            Section::Trailer => self.trailer_line(line),
        };
        if let Err(rejection) = result {
            self.reject(rejection);
        }
    }

    fn head_line(&mut self, line: &[u8]) -> Result<(), Rejection> {
        if !self.head.started {
            // RFC 9112 §2.2: empty lines before the request line are ignored.
            if !line.is_empty() {
                let request = syntax::request_line(line)?;
                self.head.started = true;
                self.head.http11 = request.http11;
                self.head.upgrade = request.connect;
            }
            return Ok(());
        }
        if line.is_empty() {
            return self.end_head();
        }
        let field = syntax::field_line(line)?;
        self.fields += 1;
        if self.fields > self.limits.max_headers {
            return Err(Rejection::TooManyHeaders);
        }
        let head = &mut self.head;
        if field.name.eq_ignore_ascii_case(b"content-length") {
            if head.content_length.is_some() {
                return Err(Rejection::DuplicateContentLength);
            }
            head.content_length = Some(syntax::content_length(field.value)?);
        } else if field.name.eq_ignore_ascii_case(b"transfer-encoding") {
            if head.chunked {
                return Err(Rejection::DuplicateTransferEncoding);
            }
            if !syntax::is_chunked(field.value) {
                return Err(Rejection::UnsupportedTransferEncoding);
            }
            head.chunked = true;
        } else if field.name.eq_ignore_ascii_case(b"upgrade") {
            head.upgrade = true;
        }
        Ok(())
    }

    fn end_head(&mut self) -> Result<(), Rejection> {
        let head = &self.head;
        if head.chunked && head.content_length.is_some() {
            return Err(Rejection::ContentLengthWithTransferEncoding);
        }
        if head.chunked && !head.http11 {
            return Err(Rejection::TransferEncodingOnHttp10);
        }
        self.ok_heads += 1;
        self.verdicts
            .ok_heads
            .store(self.ok_heads, Ordering::Release);
        self.phase = if head.upgrade {
            self.stop()
        } else if head.chunked {
            self.start_section(Section::ChunkSize)
        } else {
            match head.content_length {
                Some(len) if len > 0 => Phase::Body(len),
                _ => self.start_head(),
            }
        };
        Ok(())
    }

    fn chunk_size_line(&mut self, line: &[u8]) -> Result<(), Rejection> {
        self.phase = match syntax::chunk_size(line)? {
            0 => self.start_section(Section::Trailer),
            size => Phase::ChunkData(size),
        };
        Ok(())
    }

    fn trailer_line(&mut self, line: &[u8]) -> Result<(), Rejection> {
        if line.is_empty() {
            self.phase = self.start_head();
            return Ok(());
        }
        syntax::field_line(line).map_err(|_| Rejection::BadTrailer)?;
        self.fields += 1;
        if self.fields > self.limits.max_headers {
            return Err(Rejection::BadTrailer);
        }
        Ok(())
    }

    /// Whether the scanner rests between requests: every byte read so far belonged to a
    /// complete request and nothing of the next head has arrived. At rest, the line buffer
    /// (grown by a head that spanned reads) is given back.
    pub(super) fn at_rest(&mut self) -> bool {
        let rest = self.phase == Phase::Lines(Section::Head) && !self.head.started;
        if rest && self.line.is_empty() && self.line.capacity() > 0 {
            self.line = Vec::new();
        }
        rest && self.line.is_empty()
    }

    fn start_section(&mut self, section: Section) -> Phase {
        self.budget = self.limits.max_head_bytes;
        self.fields = 0;
        Phase::Lines(section)
    }

    fn start_head(&mut self) -> Phase {
        self.head = Head::default();
        self.start_section(Section::Head)
    }

    /// Stops scanning for good; returns the phase to set.
    fn stop(&mut self) -> Phase {
        self.line = Vec::new();
        Phase::Done
    }

    fn reject(&mut self, rejection: Rejection) {
        // Only the first one counts: scanning stops here, so there is no second.
        let _ = self.verdicts.rejection.set(rejection);
        self.phase = self.stop();
    }
}
