//! SQL text for the MySQL sink: value literals and the statement shapes of upstream's loader.
//!
//! Values are written as literals into the statement text (as upstream's `interpolateParams=true`
//! does), so many statements can travel in one multi-statement packet. Every literal form below
//! round-trips the value exactly:
//! - integers, unsigned integers and BIT as decimal numbers;
//! - FLOAT/DOUBLE in Rust's shortest round-trip exponent form (`1.5e-1`), a DOUBLE literal;
//! - DECIMAL as its exact text, unquoted (a DECIMAL literal: exact, also in comparisons);
//! - text as a quoted string (escaped for the session's `NO_BACKSLASH_ESCAPES`), binary strings and
//!   text that is not valid UTF-8 as `X'..'`;
//! - DATE/DATETIME/TIME/JSON as quoted text, ENUM and SET by member name;
//! - TIMESTAMP (UTC in the model) as quoted UTC text when the session zone is UTC (our default), else
//!   wrapped in `CONVERT_TZ(.., '+00:00', @@session.time_zone)` so the server converts with its zone rules.

use std::fmt::Write as _;

use crate::txn::{Value, format_duration, mysql_type, quote_ident};

/// How values are written for one downstream session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dialect {
    /// The session's sql_mode lacks `NO_BACKSLASH_ESCAPES`: backslashes in strings are escapes.
    pub backslash_escapes: bool,
    /// The session zone is not UTC: TIMESTAMP values are converted by the server.
    pub convert_timestamps: bool,
}

impl Default for Dialect {
    fn default() -> Self {
        Dialect { backslash_escapes: true, convert_timestamps: false }
    }
}

/// Appends `s` as a quoted SQL string.
pub(crate) fn push_quoted(out: &mut String, s: &str, d: Dialect) {
    out.reserve(s.len() + 2);
    out.push('\'');
    // Copies the runs between special characters whole. They are ASCII, and no byte of a
    // multi-byte UTF-8 sequence is ASCII, so every cut is at a char boundary.
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'\'' => "''",
            b'\\' if d.backslash_escapes => "\\\\",
            0 if d.backslash_escapes => "\\0",
            _ => continue,
        };
        out.push_str(&s[from..i]);
        out.push_str(esc);
        from = i + 1;
    }
    out.push_str(&s[from..]);
    out.push('\'');
}

/// Appends `b` as a hex literal `X'..'`.
pub(crate) fn push_hex(out: &mut String, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(b.len() * 2 + 3);
    out.push_str("X'");
    for &x in b {
        out.push(HEX[(x >> 4) as usize] as char);
        out.push(HEX[(x & 15) as usize] as char);
    }
    out.push('\'');
}

/// Appends the literal for `v`. `binary` says the downstream column is a binary string type
/// (BINARY/VARBINARY/BLOB), whose values are always written as hex.
pub(crate) fn push_literal(out: &mut String, v: &Value, binary: bool, d: Dialect) -> Result<(), String> {
    match v {
        Value::Null => out.push_str("NULL"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Uint(u) | Value::Bit(u) => {
            let _ = write!(out, "{u}");
        }
        Value::Float(f) => {
            if !f.is_finite() {
                return Err(format!("{f} is not a number MySQL can store"));
            }
            let _ = write!(out, "{f:e}");
        }
        Value::Decimal(s) => {
            let ok = !s.is_empty()
                && s.bytes().any(|b| b.is_ascii_digit())
                && s.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
            if !ok {
                return Err(format!("{s:?} is not a decimal number"));
            }
            out.push_str(s);
        }
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) if !binary => push_quoted(out, s, d),
            _ => push_hex(out, b),
        },
        Value::Time(t) => {
            let text = t.to_string();
            if t.tp == mysql_type::TIMESTAMP && d.convert_timestamps && !t.is_zero() {
                out.push_str("CONVERT_TZ(");
                push_quoted(out, &text, d);
                out.push_str(",'+00:00',@@session.time_zone)");
            } else {
                push_quoted(out, &text, d);
            }
        }
        Value::Duration { nanos, fsp } => push_quoted(out, &format_duration(*nanos, *fsp), d),
        Value::Enum { name, .. } => push_quoted(out, name, d),
        Value::Set { names, .. } => push_quoted(out, names, d),
        Value::Json(s) => push_quoted(out, s, d),
    }
    Ok(())
}

/// The literal text for `v` (see [`push_literal`]).
pub(crate) fn literal(v: &Value, binary: bool, d: Dialect) -> Result<String, String> {
    let mut s = String::new();
    push_literal(&mut s, v, binary, d)?;
    Ok(s)
}

/// The binary-protocol parameter for `v` (prepared multi-row INSERTs): the value its literal
/// writes, with nothing for the server to parse. Integers, unsigned integers, BIT and YEAR travel
/// as 64-bit integers, FLOAT/DOUBLE as a double; every other value as the bytes of its quoted
/// literal's text (DECIMAL's exact text, which a DECIMAL column stores exactly; binary strings
/// as they are: a string parameter is stored unconverted into a binary column). `None` for a
/// non-zero TIMESTAMP when the session zone is not UTC: its literal wraps it in `CONVERT_TZ`,
/// which a parameter cannot do per row, so such rows are written as literals.
pub(crate) fn param(v: &Value, d: Dialect) -> Option<mysql_async::Value> {
    use mysql_async::Value as M;
    Some(match v {
        Value::Null => M::NULL,
        Value::Int(i) => M::Int(*i),
        Value::Uint(u) | Value::Bit(u) => M::UInt(*u),
        Value::Float(f) => M::Double(*f),
        Value::Decimal(s) | Value::Json(s) => M::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => M::Bytes(b.clone()),
        Value::Time(t) => {
            if t.tp == mysql_type::TIMESTAMP && d.convert_timestamps && !t.is_zero() {
                return None;
            }
            M::Bytes(t.to_string().into_bytes())
        }
        Value::Duration { nanos, fsp } => M::Bytes(format_duration(*nanos, *fsp).into_bytes()),
        Value::Enum { name, .. } => M::Bytes(name.as_bytes().to_vec()),
        Value::Set { names, .. } => M::Bytes(names.as_bytes().to_vec()),
    })
}

/// How one item column is written.
#[derive(Debug, Clone)]
pub(crate) struct PlanCol {
    /// `` `name` ``.
    pub quoted: String,
    /// Written at all (false for generated columns, upstream's or the downstream's).
    pub write: bool,
    /// The downstream column is a binary string type.
    pub binary: bool,
}

/// How rows of one upstream table are written into its downstream table.
#[derive(Debug, Clone)]
pub(crate) struct TablePlan {
    /// `` `db`.`t` ``.
    pub quoted: String,
    /// One entry per item column.
    pub cols: Vec<PlanCol>,
    /// Downstream unique keys (PRIMARY first) as item column indexes; only keys whose columns the
    /// item has and writes.
    pub keys: Vec<Vec<usize>>,
}

/// One row as literals: `None` = the column is not written (not carried, or generated).
pub(crate) type Lits = Vec<Option<String>>;

impl TablePlan {
    /// Formats a row's values; absent and unwritten columns become `None`.
    pub fn lits(&self, row: &[Option<Value>], d: Dialect) -> Result<Lits, String> {
        let mut out = Vec::with_capacity(self.cols.len());
        for (i, c) in self.cols.iter().enumerate() {
            match row.get(i).and_then(|v| v.as_ref()) {
                Some(v) if c.write => {
                    let lit = literal(v, c.binary, d).map_err(|e| format!("column {}: {e}", c.quoted))?;
                    out.push(Some(lit));
                }
                _ => out.push(None),
            }
        }
        Ok(out)
    }

    /// The first unique key (PRIMARY first) whose values are all present and non-NULL.
    pub fn usable_key(&self, row: &Lits) -> Option<usize> {
        self.keys.iter().position(|k| k.iter().all(|&c| matches!(row.get(c), Some(Some(l)) if l != "NULL")))
    }

    /// Appends ` WHERE ...` for `row`: its first usable key, else every written column
    /// (`IS NULL` for NULLs).
    pub fn push_where(&self, out: &mut String, row: &Lits) -> Result<(), String> {
        out.push_str(" WHERE ");
        let cols: Vec<usize> = match self.usable_key(row) {
            Some(k) => self.keys[k].clone(),
            None => (0..self.cols.len()).filter(|&i| matches!(row.get(i), Some(Some(_)))).collect(),
        };
        if cols.is_empty() {
            return Err(format!("no column of {} to identify a row by", self.quoted));
        }
        for (n, &c) in cols.iter().enumerate() {
            if n > 0 {
                out.push_str(" AND ");
            }
            let lit = row[c].as_deref().unwrap_or("NULL");
            out.push_str(&self.cols[c].quoted);
            if lit == "NULL" {
                out.push_str(" IS NULL");
            } else {
                out.push_str(" = ");
                out.push_str(lit);
            }
        }
        Ok(())
    }

    /// The written-column mask of a row: rows with equal masks can share one INSERT.
    pub fn mask(row: &Lits) -> Vec<bool> {
        row.iter().map(|l| l.is_some()).collect()
    }

    /// `INSERT INTO t (cols) VALUES ` (or `REPLACE`) for rows with `mask`.
    pub fn push_insert_head(&self, out: &mut String, mask: &[bool], replace: bool) {
        out.push_str(if replace { "REPLACE INTO " } else { "INSERT INTO " });
        out.push_str(&self.quoted);
        out.push_str(" (");
        let mut first = true;
        for (c, _) in self.cols.iter().zip(mask).filter(|(_, m)| **m) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&c.quoted);
        }
        out.push_str(") VALUES ");
    }

    /// `INSERT INTO t (cols) VALUES (?,..),..` (or `REPLACE`) for `rows` rows with `mask`, to prepare.
    pub fn insert_marks(&self, mask: &[bool], replace: bool, rows: usize) -> String {
        let n = mask.iter().filter(|m| **m).count();
        let mut out = String::with_capacity(64 + rows * (2 * n + 2));
        self.push_insert_head(&mut out, mask, replace);
        for r in 0..rows {
            if r > 0 {
                out.push(',');
            }
            out.push('(');
            for c in 0..n {
                if c > 0 {
                    out.push(',');
                }
                out.push('?');
            }
            out.push(')');
        }
        out
    }

    /// `(v1,v2,..)` for one row (written columns only).
    pub fn push_values(out: &mut String, row: &Lits) {
        out.push('(');
        let mut first = true;
        for l in row.iter().flatten() {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(l);
        }
        out.push(')');
    }

    /// `UPDATE t SET .. WHERE <old> LIMIT 1`; `None` when the new row writes no column.
    pub fn push_update(&self, out: &mut String, old: &Lits, new: &Lits) -> Result<bool, String> {
        if new.iter().all(|l| l.is_none()) {
            return Ok(false);
        }
        out.push_str("UPDATE ");
        out.push_str(&self.quoted);
        out.push_str(" SET ");
        let mut first = true;
        for (c, l) in self.cols.iter().zip(new) {
            if let Some(l) = l {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&c.quoted);
                out.push_str(" = ");
                out.push_str(l);
            }
        }
        self.push_where(out, old)?;
        out.push_str(" LIMIT 1");
        Ok(true)
    }

    /// `DELETE FROM t WHERE <row> LIMIT 1`.
    pub fn push_delete(&self, out: &mut String, row: &Lits) -> Result<(), String> {
        out.push_str("DELETE FROM ");
        out.push_str(&self.quoted);
        self.push_where(out, row)?;
        out.push_str(" LIMIT 1");
        Ok(())
    }

    /// One DELETE for several rows identified by the same unique key `key`:
    /// `WHERE k IN (..)` for one column, else `(a = .. AND b = ..) OR ..`.
    pub fn push_delete_many(&self, out: &mut String, key: usize, rows: &[&Lits]) {
        let cols = &self.keys[key];
        out.push_str("DELETE FROM ");
        out.push_str(&self.quoted);
        out.push_str(" WHERE ");
        if cols.len() == 1 {
            let c = cols[0];
            out.push_str(&self.cols[c].quoted);
            out.push_str(" IN (");
            for (n, r) in rows.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(r[c].as_deref().unwrap_or("NULL"));
            }
            out.push(')');
        } else {
            for (n, r) in rows.iter().enumerate() {
                if n > 0 {
                    out.push_str(" OR ");
                }
                out.push('(');
                for (m, &c) in cols.iter().enumerate() {
                    if m > 0 {
                        out.push_str(" AND ");
                    }
                    out.push_str(&self.cols[c].quoted);
                    out.push_str(" = ");
                    out.push_str(r[c].as_deref().unwrap_or("NULL"));
                }
                out.push(')');
            }
        }
        let _ = write!(out, " LIMIT {}", rows.len());
    }

    /// Causality keys of a row: one per usable unique key, else one over every written column.
    /// Text is lower-cased and right-trimmed so that keys equal under a case-insensitive,
    /// PAD SPACE collation also collide here (over-detection is safe; under-detection is not).
    pub fn causality_keys(&self, row: &Lits, out: &mut Vec<String>) {
        let mut any = false;
        for (k, cols) in self.keys.iter().enumerate() {
            if !cols.iter().all(|&c| matches!(row.get(c), Some(Some(l)) if l != "NULL")) {
                continue;
            }
            any = true;
            let mut s = format!("{}#{k}", self.quoted);
            for &c in cols {
                s.push('\u{1}');
                s.push_str(&fold(row[c].as_deref().unwrap_or("")));
            }
            out.push(s);
        }
        if !any {
            let mut s = format!("{}#*", self.quoted);
            for l in row.iter().flatten() {
                s.push('\u{1}');
                s.push_str(&fold(l));
            }
            out.push(s);
        }
    }
}

fn fold(lit: &str) -> String {
    match lit.strip_suffix('\'') {
        Some(body) if lit.starts_with('\'') => {
            format!("{}'", body.trim_end_matches(' ').to_lowercase())
        }
        _ => lit.to_lowercase(),
    }
}

/// Builds a [`TablePlan`] quoting helper used by tests and the plan cache.
pub(crate) fn quoted_col(name: &str) -> String {
    quote_ident(name)
}

/// FNV-1a: a hash that never changes between runs (worker assignment must be reproducible
/// after a restart, see the module docs of `sink::mysql`).
pub(crate) fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{MysqlTime, Time};

    fn lit(v: Value) -> String {
        literal(&v, false, Dialect::default()).unwrap()
    }

    #[test]
    fn literals_round_trip_forms() {
        assert_eq!(lit(Value::Null), "NULL");
        assert_eq!(lit(Value::Int(-5)), "-5");
        assert_eq!(lit(Value::Uint(u64::MAX)), "18446744073709551615");
        assert_eq!(lit(Value::Float(0.1)), "1e-1");
        assert_eq!(lit(Value::Float(-1.5e300)), "-1.5e300");
        assert_eq!(lit(Value::Decimal("-12.340".into())), "-12.340");
        assert!(literal(&Value::Decimal("1;drop".into()), false, Dialect::default()).is_err());
        assert!(literal(&Value::Float(f64::NAN), false, Dialect::default()).is_err());
        assert_eq!(lit(Value::Bytes(b"it's a \\ \0".to_vec())), "'it''s a \\\\ \\0'");
        let nb = Dialect { backslash_escapes: false, ..Default::default() };
        assert_eq!(literal(&Value::Bytes(b"a\\b".to_vec()), false, nb).unwrap(), "'a\\b'");
        assert_eq!(literal(&Value::Bytes(vec![0, 255]), true, nb).unwrap(), "X'00FF'");
        assert_eq!(lit(Value::Bytes(vec![0xff, b'a'])), "X'FF61'");
        assert_eq!(lit(Value::Bit(5)), "5");
        assert_eq!(lit(Value::Enum { index: 2, name: "b".into() }), "'b'");
        assert_eq!(lit(Value::Set { bits: 3, names: "a,b".into() }), "'a,b'");
        assert_eq!(lit(Value::Duration { nanos: -1_500_000_000, fsp: 1 }), "'-00:00:01.5'");
        let ts = MysqlTime {
            time: Time { year: 2020, month: 1, day: 2, hour: 3, ..Default::default() },
            tp: mysql_type::TIMESTAMP, fsp: 0,
        };
        assert_eq!(lit(Value::Time(ts)), "'2020-01-02 03:00:00'");
        let conv = Dialect { convert_timestamps: true, ..Default::default() };
        assert_eq!(
            literal(&Value::Time(ts), false, conv).unwrap(),
            "CONVERT_TZ('2020-01-02 03:00:00','+00:00',@@session.time_zone)"
        );
        let dt = MysqlTime { tp: mysql_type::DATETIME, ..ts };
        assert_eq!(literal(&Value::Time(dt), false, conv).unwrap(), "'2020-01-02 03:00:00'");
    }

    proptest::proptest! {
        /// The run-copying quoter writes what escaping char by char writes, in both dialects.
        #[test]
        fn quoting_escapes_exactly_the_special_characters(s in "(\\PC|['\\\\\\x00é😀])*", bs: bool) {
            let d = Dialect { backslash_escapes: bs, ..Default::default() };
            let mut want = String::from("'");
            for ch in s.chars() {
                match ch {
                    '\'' => want.push_str("''"),
                    '\\' if bs => want.push_str("\\\\"),
                    '\0' if bs => want.push_str("\\0"),
                    c => want.push(c),
                }
            }
            want.push('\'');
            let mut got = String::new();
            push_quoted(&mut got, &s, d);
            proptest::prop_assert_eq!(got, want);
        }
    }

    fn plan() -> TablePlan {
        let col = |n: &str| PlanCol { quoted: quoted_col(n), write: true, binary: false };
        TablePlan {
            quoted: "`d`.`t`".into(),
            cols: vec![col("id"), col("u"), col("v"), PlanCol { write: false, ..col("g") }],
            keys: vec![vec![0], vec![1, 2]],
        }
    }

    #[test]
    fn statements_follow_upstream_shapes() {
        let p = plan();
        let d = Dialect::default();
        let row =
            p.lits(&[Some(Value::Int(1)), Some(Value::Null), Some(Value::Int(3)), Some(Value::Int(9))], d).unwrap();
        assert_eq!(row[3], None, "generated columns are never written");
        let mut s = String::new();
        p.push_insert_head(&mut s, &TablePlan::mask(&row), false);
        TablePlan::push_values(&mut s, &row);
        assert_eq!(s, "INSERT INTO `d`.`t` (`id`,`u`,`v`) VALUES (1,NULL,3)");
        let mut s = String::new();
        p.push_delete(&mut s, &row).unwrap();
        assert_eq!(s, "DELETE FROM `d`.`t` WHERE `id` = 1 LIMIT 1");
        // no id: the (u,v) key has a NULL, so every column is used
        let row2 = p.lits(&[None, Some(Value::Null), Some(Value::Int(3)), None], d).unwrap();
        let mut s = String::new();
        p.push_delete(&mut s, &row2).unwrap();
        assert_eq!(s, "DELETE FROM `d`.`t` WHERE `u` IS NULL AND `v` = 3 LIMIT 1");
        let row3 = p.lits(&[None, Some(Value::Int(2)), Some(Value::Int(3)), None], d).unwrap();
        let mut s = String::new();
        assert!(p.push_update(&mut s, &row3, &row).unwrap());
        assert_eq!(s, "UPDATE `d`.`t` SET `id` = 1,`u` = NULL,`v` = 3 WHERE `u` = 2 AND `v` = 3 LIMIT 1");
        let mut s = String::new();
        p.push_delete_many(&mut s, 1, &[&row3, &row3]);
        assert_eq!(s, "DELETE FROM `d`.`t` WHERE (`u` = 2 AND `v` = 3) OR (`u` = 2 AND `v` = 3) LIMIT 2");
        let mut s = String::new();
        p.push_delete_many(&mut s, 0, &[&row, &row]);
        assert_eq!(s, "DELETE FROM `d`.`t` WHERE `id` IN (1,1) LIMIT 2");
    }

    #[test]
    fn causality_keys_fold_case_and_fall_back_to_all_columns() {
        let p = plan();
        let d = Dialect::default();
        let a = p.lits(&[None, Some(Value::Bytes(b"AB ".to_vec())), Some(Value::Int(3)), None], d).unwrap();
        let b = p.lits(&[None, Some(Value::Bytes(b"ab".to_vec())), Some(Value::Int(3)), None], d).unwrap();
        let (mut ka, mut kb) = (vec![], vec![]);
        p.causality_keys(&a, &mut ka);
        p.causality_keys(&b, &mut kb);
        assert_eq!(ka, kb);
        assert_eq!(ka.len(), 1);
        let n = p.lits(&[None, Some(Value::Null), Some(Value::Int(3)), None], d).unwrap();
        let mut kn = vec![];
        p.causality_keys(&n, &mut kn);
        assert!(kn[0].starts_with("`d`.`t`#*"));
        assert_ne!(stable_hash(&ka[0]), stable_hash(&kn[0]));
    }
}
