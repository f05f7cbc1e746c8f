//! DATE/DATETIME/TIMESTAMP as TiDB's packed uint64 and TIME as nanoseconds.
//!
//! Format (`Time.ToPackedUint`): `ymd = ((year*13 + month) << 5) | day`,
//! `hms = (hour << 12) | (minute << 6) | second`, `packed = ((ymd << 17 | hms) << 24) | microsecond`;
//! the zero time is 0. The fsp is not stored: it is the column's `Decimal`. TIMESTAMP values are packed
//! in UTC.

use std::fmt::Write as _;

use super::ground::CodecError;

/// A calendar time with microseconds, as packed by TiDB. Zero dates (`0000-00-00`) are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Time {
    /// Year, 0..=9999.
    pub year: u16,
    /// Month, 0..=12.
    pub month: u8,
    /// Day, 0..=31.
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=59.
    pub second: u8,
    /// Microsecond, 0..=999999.
    pub microsecond: u32,
}

impl Time {
    /// The packed uint64 (`ToPackedUint`).
    pub fn to_packed(&self) -> u64 {
        let ymd = ((u64::from(self.year) * 13 + u64::from(self.month)) << 5) | u64::from(self.day);
        let hms = (u64::from(self.hour) << 12) | (u64::from(self.minute) << 6) | u64::from(self.second);
        (((ymd << 17) | hms) << 24) | u64::from(self.microsecond)
    }

    /// Unpacks a packed uint64 (`FromPackedUint`), refusing out-of-range fields.
    pub fn from_packed(packed: u64) -> Result<Time, CodecError> {
        let bad = |reason| CodecError::BadTime { packed, reason };
        let ymdhms = packed >> 24;
        let ymd = ymdhms >> 17;
        let ym = ymd >> 5;
        let hms = ymdhms & 0x1FFFF;
        let t = Time {
            year: u16::try_from(ym / 13).map_err(|_| bad("year above 9999"))?,
            month: (ym % 13) as u8,
            day: (ymd & 31) as u8,
            hour: (hms >> 12) as u8,
            minute: ((hms >> 6) & 63) as u8,
            second: (hms & 63) as u8,
            microsecond: (packed & 0xFF_FFFF) as u32,
        };
        t.check().map_err(bad)?;
        Ok(t)
    }

    fn check(&self) -> Result<(), &'static str> {
        if self.year > 9999 {
            return Err("year above 9999");
        }
        if self.month > 12 {
            return Err("month above 12");
        }
        if self.day > 31 {
            return Err("day above 31");
        }
        if self.hour > 23 {
            return Err("hour above 23");
        }
        if self.minute > 59 {
            return Err("minute above 59");
        }
        if self.second > 59 {
            return Err("second above 59");
        }
        if self.microsecond > 999_999 {
            return Err("microsecond above 999999");
        }
        Ok(())
    }

    /// `YYYY-MM-DD`.
    pub fn date_string(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `YYYY-MM-DD HH:MM:SS[.ffffff]` with `fsp` fraction digits (0..=6; negative means 0).
    pub fn datetime_string(&self, fsp: i32) -> String {
        let mut s = format!(
            "{} {:02}:{:02}:{:02}",
            self.date_string(),
            self.hour,
            self.minute,
            self.second
        );
        push_fraction(&mut s, u64::from(self.microsecond), 6, fsp);
        s
    }

    /// Parses `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` (also `T` as the separator).
    pub fn parse(text: &str) -> Result<Time, CodecError> {
        let bad = |reason: &str| CodecError::BadValue { what: format!("time {text:?}"), reason: reason.into() };
        let t = text.trim();
        let (date, clock) = match t.find([' ', 'T']) {
            Some(i) => (&t[..i], Some(&t[i + 1..])),
            None => (t, None),
        };
        let mut d = date.split('-');
        let (Some(y), Some(m), Some(dd), None) = (d.next(), d.next(), d.next(), d.next()) else {
            return Err(bad("expected YYYY-MM-DD"));
        };
        let num = |s: &str| s.parse::<u32>().map_err(|_| bad("not a number"));
        let mut out = Time {
            year: u16::try_from(num(y)?).map_err(|_| bad("year out of range"))?,
            month: u8::try_from(num(m)?).map_err(|_| bad("month out of range"))?,
            day: u8::try_from(num(dd)?).map_err(|_| bad("day out of range"))?,
            ..Time::default()
        };
        if let Some(clock) = clock {
            let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
            let mut c = hms.split(':');
            let (Some(h), Some(mi), Some(s), None) = (c.next(), c.next(), c.next(), c.next()) else {
                return Err(bad("expected HH:MM:SS"));
            };
            out.hour = u8::try_from(num(h)?).map_err(|_| bad("hour out of range"))?;
            out.minute = u8::try_from(num(mi)?).map_err(|_| bad("minute out of range"))?;
            out.second = u8::try_from(num(s)?).map_err(|_| bad("second out of range"))?;
            out.microsecond = parse_fraction(frac, 6).ok_or_else(|| bad("bad fraction"))? as u32;
        }
        out.check().map_err(bad)?;
        Ok(out)
    }
}

/// A TIME value: signed nanoseconds with the column's fsp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Duration {
    /// Nanoseconds, may be negative.
    pub nanos: i64,
    /// Fraction digits to print (0..=6).
    pub fsp: u8,
}

impl Duration {
    /// Parses `[-]H+:MM:SS[.ffffff]` with the given fsp.
    pub fn parse(text: &str, fsp: u8) -> Result<Duration, CodecError> {
        let bad = |reason: &str| CodecError::BadValue { what: format!("time {text:?}"), reason: reason.into() };
        let t = text.trim();
        let (neg, t) = t.strip_prefix('-').map(|r| (true, r)).unwrap_or((false, t));
        let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
        let mut c = hms.split(':');
        let (Some(h), Some(m), Some(s), None) = (c.next(), c.next(), c.next(), c.next()) else {
            return Err(bad("expected HH:MM:SS"));
        };
        let num = |s: &str| s.parse::<i64>().map_err(|_| bad("not a number"));
        let (h, m, s) = (num(h)?, num(m)?, num(s)?);
        if !(0..=838).contains(&h) || !(0..60).contains(&m) || !(0..60).contains(&s) {
            return Err(bad("out of range"));
        }
        let ns = parse_fraction(frac, 9).ok_or_else(|| bad("bad fraction"))? as i64;
        let total = ((h * 60 + m) * 60 + s) * 1_000_000_000 + ns;
        Ok(Duration { nanos: if neg { -total } else { total }, fsp })
    }
}

impl std::fmt::Display for Duration {
    /// `[-]HH:MM:SS[.f]` with `fsp` fraction digits, as MySQL prints TIME.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let abs = self.nanos.unsigned_abs();
        let secs = abs / 1_000_000_000;
        let mut s = String::new();
        if self.nanos < 0 {
            s.push('-');
        }
        let _ = write!(s, "{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
        push_fraction(&mut s, abs % 1_000_000_000, 9, i32::from(self.fsp));
        f.write_str(&s)
    }
}

/// Appends `.` and the first `fsp` digits of `frac`, a fraction with `width` digits.
fn push_fraction(s: &mut String, frac: u64, width: usize, fsp: i32) {
    if fsp <= 0 {
        return;
    }
    let fsp = (fsp as usize).min(6);
    let digits = format!("{frac:0width$}");
    s.push('.');
    s.push_str(&digits[..fsp.min(digits.len())]);
}

/// Parses up to `width` fraction digits as an integer scaled to `width` digits.
fn parse_fraction(frac: &str, width: usize) -> Option<u64> {
    if frac.is_empty() {
        return Some(0);
    }
    if frac.len() > width || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u64 = frac.parse().ok()?;
    Some(v * 10u64.pow((width - frac.len()) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_packs() {
        let t = Time { year: 2024, month: 1, day: 2, hour: 3, minute: 4, second: 5, microsecond: 6 };
        assert_eq!(t.to_packed(), 1851617374130667526);
        assert_eq!(t.to_packed(), 0x19B2443105000006);
        assert_eq!(Time::from_packed(0x19B2443105000006).unwrap(), t);
        assert_eq!(t.datetime_string(6), "2024-01-02 03:04:05.000006");
        assert_eq!(t.datetime_string(0), "2024-01-02 03:04:05");
        assert_eq!(t.datetime_string(3), "2024-01-02 03:04:05.000");
        assert_eq!(t.date_string(), "2024-01-02");
    }

    #[test]
    fn zero_time_is_zero() {
        assert_eq!(Time::default().to_packed(), 0);
        assert_eq!(Time::from_packed(0).unwrap().datetime_string(0), "0000-00-00 00:00:00");
    }

    #[test]
    fn out_of_range_fields_are_refused() {
        let hour_24 = Time { hour: 24, ..Time::default() }.to_packed();
        assert_eq!(Time::from_packed(hour_24).unwrap_err(), CodecError::BadTime { packed: hour_24, reason: "hour above 23" });
        assert!(Time::from_packed(u64::MAX).is_err());
        let usec = 1_000_000u64;
        assert!(Time::from_packed(usec).is_err());
    }

    #[test]
    fn parse_time_text() {
        let t = Time::parse("2024-01-02 03:04:05.5").unwrap();
        assert_eq!(t.microsecond, 500_000);
        assert_eq!(Time::parse("1999-12-31").unwrap().to_packed(), Time { year: 1999, month: 12, day: 31, ..Default::default() }.to_packed());
        assert!(Time::parse("2024-13-01").is_err());
        assert!(Time::parse("x").is_err());
    }

    #[test]
    fn durations_print_like_mysql() {
        let d = Duration::parse("-838:59:59.5", 1).unwrap();
        assert_eq!(d.nanos, -(838 * 3600 + 59 * 60 + 59) * 1_000_000_000 - 500_000_000);
        assert_eq!(d.to_string(), "-838:59:59.5");
        assert_eq!(Duration { nanos: 3_723_000_000_000, fsp: 0 }.to_string(), "01:02:03");
        assert_eq!(Duration { nanos: 1_500, fsp: 6 }.to_string(), "00:00:00.000001");
        assert!(Duration::parse("1:60:00", 0).is_err());
    }
}
