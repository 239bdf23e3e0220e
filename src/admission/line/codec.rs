//! A tiny little-endian codec for the line's snapshot: fixed-width numbers
//! and length-prefixed arrays, every length checked against the bytes left
//! so a damaged file can never make the reader allocate more than its size.

/// Why a snapshot could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Not a line snapshot (wrong magic).
    #[error("not a line snapshot")]
    Magic,
    /// Written by a format this build does not know.
    #[error("unknown snapshot version {0}")]
    Version(u32),
    /// The checksum does not match: torn or damaged.
    #[error("checksum mismatch (torn or damaged file)")]
    Checksum,
    /// Cut short, or a length beyond the data.
    #[error("truncated or malformed at byte {0}")]
    Truncated(usize),
    /// The fields contradict each other.
    #[error("inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// Appends fixed-width little-endian values.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn words<'a>(&mut self, len: usize, words: impl Iterator<Item = &'a u64>) {
        self.u64(len as u64);
        for w in words {
            self.u64(*w);
        }
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

/// Reads what [`Writer`] wrote.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(SnapshotError::Truncated(self.at))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, SnapshotError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, SnapshotError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    /// A length whose items take `item` bytes each, checked against the rest.
    pub(crate) fn len(&mut self, item: usize) -> Result<usize, SnapshotError> {
        let at = self.at;
        let n = usize::try_from(self.u64()?).map_err(|_| SnapshotError::Truncated(at))?;
        let left = self.buf.len() - self.at;
        if n.checked_mul(item).is_none_or(|b| b > left) {
            return Err(SnapshotError::Truncated(at));
        }
        Ok(n)
    }
    pub(crate) fn words(&mut self) -> Result<Vec<u64>, SnapshotError> {
        let n = self.len(8)?;
        (0..n).map(|_| self.u64()).collect()
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let n = self.len(1)?;
        self.take(n)
    }
    pub(crate) fn done(&self) -> bool {
        self.at == self.buf.len()
    }
}
