//! Exact decimals and MySQL's binary DECIMAL format (`decimal2bin`/`bin2decimal`, TiDB `MyDecimal`
//! `ToBin`/`FromBin`).
//!
//! Format for (precision, frac), `intg = precision - frac`, `dig2bytes = [0,1,1,2,2,3,3,4,4,4]`:
//! the leading `intg % 9` integer digits in `dig2bytes[intg % 9]` big-endian bytes, each full group of
//! 9 integer digits in 4 bytes, each full group of 9 fraction digits in 4 bytes, then the trailing
//! `frac % 9` fraction digits as an integer in `dig2bytes[frac % 9]` bytes. A negative value has every
//! byte inverted; finally the top bit of byte 0 is flipped, so it is set for non-negative values.

use std::fmt;

use super::ground::CodecError;

/// Largest precision (`mysql.MaxDecimalWidth`).
pub const MAX_PRECISION: u8 = 65;
/// Largest frac (`mysql.MaxDecimalScale`).
pub const MAX_FRAC: u8 = 30;

const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
const DIGITS_PER_WORD: usize = 9;
const POW10: [u32; 10] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000];

/// An exact decimal with the (precision, frac) it is encoded with. Its text has exactly `frac`
/// fraction digits and no leading integer zeros (`0.50`, `-12.34`, `7`), as TiDB prints it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal {
    negative: bool,
    /// Integer digits without leading zeros (empty for a zero integer part).
    int_digits: String,
    /// Exactly `frac` fraction digits.
    frac_digits: String,
    precision: u8,
    frac: u8,
}

impl Decimal {
    /// Parses decimal text (`[+-]digits[.digits]`) for a column of `(precision, frac)`. Fraction digits
    /// are padded with zeros to `frac`; extra non-zero fraction digits or too many integer digits are an
    /// error (no rounding).
    pub fn parse(text: &str, precision: u8, frac: u8) -> Result<Decimal, CodecError> {
        let bad = |reason: String| CodecError::BadValue { what: format!("decimal {text:?}"), reason };
        check_precision(precision, frac).map_err(bad)?;
        let (negative, int_digits, mut frac_digits) = split_text(text).map_err(bad)?;
        if frac_digits.len() > usize::from(frac) {
            if frac_digits[usize::from(frac)..].bytes().any(|b| b != b'0') {
                return Err(bad(format!("more than {frac} fraction digits")));
            }
            frac_digits.truncate(usize::from(frac));
        }
        while frac_digits.len() < usize::from(frac) {
            frac_digits.push('0');
        }
        if int_digits.len() > usize::from(precision - frac) {
            return Err(bad(format!("more than {} integer digits for ({precision},{frac})", precision - frac)));
        }
        Ok(Decimal::normalized(negative, int_digits, frac_digits, precision, frac))
    }

    /// Parses decimal text and takes (precision, frac) from its digits, as TiDB does for a decimal
    /// datum without a column length (`PrecisionAndFrac`, precision at least 1).
    pub fn from_text(text: &str) -> Result<Decimal, CodecError> {
        let bad = |reason: String| CodecError::BadValue { what: format!("decimal {text:?}"), reason };
        let (_, int_digits, frac_digits) = split_text(text).map_err(bad)?;
        let frac = u8::try_from(frac_digits.len()).map_err(|_| bad("too many fraction digits".into()))?;
        let precision = u8::try_from((int_digits.len() + frac_digits.len()).max(1))
            .map_err(|_| bad("too many digits".into()))?;
        Decimal::parse(text, precision, frac)
    }

    /// Zero for a column of (precision, frac), both clamped to valid ranges (`0.00` for (10,2)).
    pub fn zero(precision: i64, frac: i64) -> Decimal {
        let precision = precision.clamp(1, i64::from(MAX_PRECISION)) as u8;
        let frac = frac.clamp(0, i64::from(MAX_FRAC)).min(i64::from(precision)) as u8;
        Decimal::normalized(false, String::new(), "0".repeat(usize::from(frac)), precision, frac)
    }

    fn normalized(negative: bool, int_digits: String, frac_digits: String, precision: u8, frac: u8) -> Decimal {
        let zero = int_digits.is_empty() && frac_digits.bytes().all(|b| b == b'0');
        Decimal { negative: negative && !zero, int_digits, frac_digits, precision, frac }
    }

    /// The precision it is encoded with.
    pub fn precision(&self) -> u8 {
        self.precision
    }

    /// The number of fraction digits it is encoded with.
    pub fn frac(&self) -> u8 {
        self.frac
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// Bytes of the binary form for (precision, frac), or why they are invalid.
    pub fn bin_size(precision: u8, frac: u8) -> Result<usize, String> {
        check_precision(precision, frac)?;
        let intg = usize::from(precision - frac);
        let frac = usize::from(frac);
        Ok((intg / DIGITS_PER_WORD) * 4
            + DIG2BYTES[intg % DIGITS_PER_WORD]
            + (frac / DIGITS_PER_WORD) * 4
            + DIG2BYTES[frac % DIGITS_PER_WORD])
    }

    /// The MySQL binary form (`decimal2bin`) for its (precision, frac).
    pub fn to_bin(&self) -> Vec<u8> {
        let intg = usize::from(self.precision - self.frac);
        let mut out = Vec::with_capacity(Decimal::bin_size(self.precision, self.frac).unwrap_or(0));
        // Integer part, left-padded to intg digits.
        let mut digits = "0".repeat(intg.saturating_sub(self.int_digits.len()));
        digits.push_str(&self.int_digits);
        let lead = intg % DIGITS_PER_WORD;
        put_group(&mut out, &digits[..lead], DIG2BYTES[lead]);
        for chunk in digits.as_bytes()[lead..].chunks(DIGITS_PER_WORD) {
            put_group(&mut out, std::str::from_utf8(chunk).unwrap_or("0"), 4);
        }
        // Fraction part: full groups, then the trailing digits as an integer.
        let frac = usize::from(self.frac);
        let full = frac / DIGITS_PER_WORD * DIGITS_PER_WORD;
        for chunk in self.frac_digits.as_bytes()[..full].chunks(DIGITS_PER_WORD) {
            put_group(&mut out, std::str::from_utf8(chunk).unwrap_or("0"), 4);
        }
        let tail = frac % DIGITS_PER_WORD;
        put_group(&mut out, &self.frac_digits[full..], DIG2BYTES[tail]);
        if self.negative {
            for b in &mut out {
                *b = !*b;
            }
        }
        if let Some(b) = out.first_mut() {
            *b ^= 0x80;
        }
        out
    }

    /// Parses the binary form of (precision, frac) (`bin2decimal`). `bin` must be exactly
    /// [`Decimal::bin_size`] bytes.
    pub fn from_bin(bin: &[u8], precision: u8, frac: u8) -> Result<Decimal, String> {
        let size = Decimal::bin_size(precision, frac)?;
        if bin.len() != size || size == 0 {
            return Err(format!("binary decimal ({precision},{frac}) needs {size} bytes, got {}", bin.len()));
        }
        let negative = bin[0] & 0x80 == 0;
        let mask = if negative { 0xFF } else { 0 };
        let mut b = bin.to_vec();
        b[0] ^= 0x80;
        for x in &mut b {
            *x ^= mask;
        }
        let intg = usize::from(precision - frac);
        let mut pos = 0;
        let mut int_digits = String::new();
        let lead = intg % DIGITS_PER_WORD;
        read_group(&b, &mut pos, lead, &mut int_digits)?;
        for _ in 0..intg / DIGITS_PER_WORD {
            read_group(&b, &mut pos, DIGITS_PER_WORD, &mut int_digits)?;
        }
        let int_digits = int_digits.trim_start_matches('0').to_owned();
        let mut frac_digits = String::new();
        for _ in 0..usize::from(frac) / DIGITS_PER_WORD {
            read_group(&b, &mut pos, DIGITS_PER_WORD, &mut frac_digits)?;
        }
        read_group(&b, &mut pos, usize::from(frac) % DIGITS_PER_WORD, &mut frac_digits)?;
        Ok(Decimal::normalized(negative, int_digits, frac_digits, precision, frac))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str(if self.int_digits.is_empty() { "0" } else { &self.int_digits })?;
        if !self.frac_digits.is_empty() {
            write!(f, ".{}", self.frac_digits)?;
        }
        Ok(())
    }
}

fn check_precision(precision: u8, frac: u8) -> Result<(), String> {
    if precision == 0 || precision > MAX_PRECISION || frac > MAX_FRAC || frac > precision {
        return Err(format!("bad precision/frac ({precision},{frac})"));
    }
    Ok(())
}

/// Sign, integer digits without leading zeros, fraction digits.
fn split_text(text: &str) -> Result<(bool, String, String), String> {
    let t = text.trim();
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty() {
        return Err("no digits".into());
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a decimal number".into());
    }
    Ok((negative, int.trim_start_matches('0').to_owned(), frac.to_owned()))
}

fn put_group(out: &mut Vec<u8>, digits: &str, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let v: u32 = digits.parse().unwrap_or(0);
    out.extend_from_slice(&v.to_be_bytes()[4 - bytes..]);
}

fn read_group(b: &[u8], pos: &mut usize, digits: usize, out: &mut String) -> Result<(), String> {
    let n = DIG2BYTES[digits];
    if n == 0 {
        return Ok(());
    }
    let Some(bytes) = b.get(*pos..*pos + n) else {
        return Err("binary decimal truncated".into());
    };
    let mut v: u32 = 0;
    for &x in bytes {
        v = (v << 8) | u32::from(x);
    }
    if v >= POW10[digits] {
        return Err(format!("digit group {v} at byte {} has more than {digits} digits", *pos));
    }
    *pos += n;
    out.push_str(&format!("{v:0digits$}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, p: u8, f: u8, bin: &[u8], shown: &str) {
        let d = Decimal::parse(text, p, f).unwrap();
        assert_eq!(d.to_bin(), bin, "{text} ({p},{f})");
        let back = Decimal::from_bin(bin, p, f).unwrap();
        assert_eq!(back.to_string(), shown);
        assert_eq!(back, d);
    }

    #[test]
    fn spec_examples() {
        check("1234567890.1234", 14, 4, &[0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2], "1234567890.1234");
        check("-1234567890.1234", 14, 4, &[0x7E, 0xF2, 0x04, 0xC7, 0x2D, 0xFB, 0x2D], "-1234567890.1234");
        check("12.34", 10, 2, &[0x80, 0x00, 0x00, 0x0C, 0x22], "12.34");
        check("-12.34", 10, 2, &[0x7F, 0xFF, 0xFF, 0xF3, 0xDD], "-12.34");
        check("0", 10, 2, &[0x80, 0x00, 0x00, 0x00, 0x00], "0.00");
    }

    #[test]
    fn hand_derived_vectors() {
        // (3,1): intg 2 -> 1 byte, frac 1 -> 1 byte. 1.5 -> 01 05 -> 81 05.
        check("1.5", 3, 1, &[0x81, 0x05], "1.5");
        // (18,9): intg 9 -> one word, frac 9 -> one word.
        check("-0.000000001", 18, 9, &[0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE], "-0.000000001");
        // (1,0): 7 -> 87.
        check("7", 1, 0, &[0x87], "7");
        // (5,5): no integer digits; .12345 -> 3 bytes 0x003039.
        check(".12345", 5, 5, &[0x80, 0x30, 0x39], "0.12345");
        // Negative zero is encoded as positive zero.
        check("-0.0", 3, 1, &[0x80, 0x00], "0.0");
    }

    #[test]
    fn parse_pads_and_refuses_what_does_not_fit() {
        assert_eq!(Decimal::parse("3.1", 5, 3).unwrap().to_string(), "3.100");
        assert_eq!(Decimal::parse("3.1000", 5, 1).unwrap().to_string(), "3.1");
        assert!(Decimal::parse("3.14", 5, 1).is_err());
        assert!(Decimal::parse("1234", 5, 2).is_err());
        assert!(Decimal::parse("1x", 5, 2).is_err());
        assert!(Decimal::parse("1", 0, 0).is_err());
        assert!(Decimal::parse("1", 66, 0).is_err());
        let d = Decimal::from_text("-0012.500").unwrap();
        assert_eq!((d.precision(), d.frac(), d.to_string()), (5, 3, "-12.500".into()));
        assert_eq!(Decimal::from_text("0").unwrap().precision(), 1);
    }

    #[test]
    fn from_bin_refuses_bad_groups_and_lengths() {
        // (1,0) with digit 10: 0x8A.
        assert!(Decimal::from_bin(&[0x8A], 1, 0).is_err());
        assert!(Decimal::from_bin(&[0x80], 10, 2).is_err());
        assert!(Decimal::from_bin(&[0x80; 40], 66, 0).is_err());
    }

    #[test]
    fn max_precision_round_trips() {
        let text = format!("{}.{}", "9".repeat(35), "1".repeat(30));
        let d = Decimal::parse(&text, 65, 30).unwrap();
        assert_eq!(d.to_bin().len(), Decimal::bin_size(65, 30).unwrap());
        assert_eq!(Decimal::from_bin(&d.to_bin(), 65, 30).unwrap().to_string(), text);
    }
}
