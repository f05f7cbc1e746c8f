//! The ground of the `tidb` modules: the one error type every decoder returns and Go's varints.
//! It imports nothing from its siblings, so `codec`, `decimal`, `json` and `time` all build on it
//! without importing each other in a circle.

/// Malformed encoded data. Offsets are from the start of the slice given to the public function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ended inside a datum.
    #[error("datum with flag {flag} at offset {offset}: truncated, needs {need} more bytes, {have} left")]
    Truncated {
        /// Flag of the datum being read.
        flag: u8,
        /// Where the truncated part starts.
        offset: usize,
        /// Bytes needed.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// The input ended where a datum was expected.
    #[error("datum expected at offset {offset}, input ended")]
    Empty {
        /// Where the datum should start.
        offset: usize,
    },
    /// An unknown flag byte.
    #[error("unknown datum flag {flag} at offset {offset}")]
    UnknownFlag {
        /// The flag.
        flag: u8,
        /// Where it is.
        offset: usize,
    },
    /// A varint longer than 10 bytes or overflowing 64 bits.
    #[error("datum with flag {flag} at offset {offset}: varint overflows 64 bits")]
    VarintOverflow {
        /// Flag of the datum.
        flag: u8,
        /// Where the varint starts.
        offset: usize,
    },
    /// A memcomparable bytes group with a bad marker or non-zero padding.
    #[error("bytes datum at offset {offset}: bad group marker {marker:#04x}")]
    BadBytesGroup {
        /// Where the group starts.
        offset: usize,
        /// The marker byte.
        marker: u8,
    },
    /// A length that does not fit in memory or is negative.
    #[error("datum with flag {flag} at offset {offset}: bad length {len}")]
    BadLength {
        /// Flag of the datum.
        flag: u8,
        /// Where the length is.
        offset: usize,
        /// The length read.
        len: i64,
    },
    /// A decimal datum with bad precision/frac or digits.
    #[error("decimal at offset {offset}: {reason}")]
    BadDecimal {
        /// Where the decimal payload starts.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A binary JSON value that does not parse.
    #[error("json at offset {offset}: {reason}")]
    BadJson {
        /// Offset of the bad part.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A row whose structure is wrong (column id not an int, odd pair, trailing bytes).
    #[error("row at offset {offset}: {reason}")]
    BadRow {
        /// Where the problem is.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A datum whose kind does not fit the column type during unflatten or flatten.
    #[error("column type {tp}: cannot convert {datum}")]
    TypeMismatch {
        /// MySQL type byte of the column.
        tp: u8,
        /// Short description of the datum.
        datum: String,
    },
    /// A packed time whose fields are out of range.
    #[error("packed time {packed}: {reason}")]
    BadTime {
        /// The packed value.
        packed: u64,
        /// Which field is out of range.
        reason: &'static str,
    },
    /// A value (decimal text, JSON, enum or set) that cannot be represented.
    #[error("{what}: {reason}")]
    BadValue {
        /// The value or its kind.
        what: String,
        /// What is wrong.
        reason: String,
    },
}

/// Go's `binary.PutVarint`: zigzag, then LEB128.
pub fn put_varint(buf: &mut Vec<u8>, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Go's `binary.PutUvarint`: LEB128, 7 bits per byte, high bit = more.
pub fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads a LEB128 uvarint from the front of `buf`: the value and its length, or `None` if it is
/// truncated or overflows.
pub fn read_uvarint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some((v, i + 1));
        }
    }
    None
}
