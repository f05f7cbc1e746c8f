//! The stand-in's tables: which columns each kind has, the DDL text, the TiDB `TableInfo` it implies,
//! and random values for each column type.

use drainer::tidb::model::{
    CIStr, ColumnInfo, FieldType, IndexColumn, IndexInfo, TableInfo, flag, schema_state, tp,
};
use rand::Rng;
use rand::rngs::SmallRng;

/// The shapes of workload tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `id BIGINT PRIMARY KEY` (the handle) and one column of every type.
    Types,
    /// Clustered composite primary key `(a VARCHAR, b INT)` plus a unique key.
    Composite,
    /// No primary key: rows have an implicit `_tidb_rowid` (the `k` column's value here).
    NoPk,
    /// `id BIGINT UNSIGNED PRIMARY KEY` and a unique VARCHAR key.
    Unsigned,
}

impl Kind {
    /// The kinds, cycled through for `--tables`.
    pub const ALL: [Kind; 4] = [Kind::Types, Kind::Composite, Kind::NoPk, Kind::Unsigned];

    /// A short name used in table names.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Types => "types",
            Kind::Composite => "composite",
            Kind::NoPk => "nopk",
            Kind::Unsigned => "unsigned",
        }
    }

    /// The kind of a table named by [`Kind::name`] (prefix `t_<name>_`).
    pub fn of_table(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| name.starts_with(&format!("t_{}_", k.name())))
    }
}

/// One column: its SQL type text and its TiDB field type.
#[derive(Debug, Clone)]
pub struct Col {
    /// Column name.
    pub name: String,
    /// SQL type with attributes, as in CREATE TABLE.
    pub sql: String,
    /// The field type TiDB would record.
    pub ft: FieldType,
}

fn ft(t: u8, fl: u64, flen: i64, dec: i64) -> FieldType {
    FieldType::new(t, fl, flen, dec)
}

fn text_ft(t: u8, fl: u64, flen: i64) -> FieldType {
    FieldType { charset: "utf8mb4".into(), collate: "utf8mb4_bin".into(), ..FieldType::new(t, fl, flen, 0) }
}

fn col(name: &str, sql: &str, ft: FieldType) -> Col {
    Col { name: name.into(), sql: sql.into(), ft }
}

/// The columns of every type (nullable), as in [`Kind::Types`].
pub fn typed_columns() -> Vec<Col> {
    let mut e = text_ft(tp::ENUM, 0, -1);
    e.elems = Some(vec!["a".into(), "b".into(), "c".into()]);
    let mut s = text_ft(tp::SET, 0, -1);
    s.elems = Some(vec!["x".into(), "y".into(), "z".into()]);
    vec![
        col("c_tiny", "TINYINT", ft(tp::TINY, 0, 4, 0)),
        col("c_small", "SMALLINT", ft(tp::SHORT, 0, 6, 0)),
        col("c_medium", "MEDIUMINT", ft(tp::INT24, 0, 9, 0)),
        col("c_int", "INT", ft(tp::LONG, 0, 11, 0)),
        col("c_big", "BIGINT", ft(tp::LONGLONG, 0, 20, 0)),
        col("c_uint", "INT UNSIGNED", ft(tp::LONG, flag::UNSIGNED, 10, 0)),
        col("c_ubig", "BIGINT UNSIGNED", ft(tp::LONGLONG, flag::UNSIGNED, 20, 0)),
        col("c_float", "FLOAT", ft(tp::FLOAT, 0, 12, -1)),
        col("c_double", "DOUBLE", ft(tp::DOUBLE, 0, 22, -1)),
        col("c_dec", "DECIMAL(20,6)", ft(tp::NEWDECIMAL, 0, 20, 6)),
        col("c_char", "CHAR(10)", text_ft(tp::STRING, 0, 10)),
        col("c_varchar", "VARCHAR(64)", text_ft(tp::VARCHAR, 0, 64)),
        col("c_text", "TEXT", text_ft(tp::BLOB, flag::BLOB, 65535)),
        col("c_blob", "MEDIUMBLOB", ft(tp::MEDIUM_BLOB, flag::BLOB | flag::BINARY, 16777215, 0)),
        col("c_binary", "BINARY(8)", ft(tp::STRING, flag::BINARY, 8, 0)),
        col("c_varbinary", "VARBINARY(16)", ft(tp::VARCHAR, flag::BINARY, 16, 0)),
        col("c_date", "DATE", ft(tp::DATE, 0, 10, 0)),
        col("c_datetime", "DATETIME(6)", ft(tp::DATETIME, 0, 26, 6)),
        col("c_ts", "TIMESTAMP(3) NULL DEFAULT NULL", ft(tp::TIMESTAMP, 0, 23, 3)),
        col("c_time", "TIME(2)", ft(tp::DURATION, 0, 13, 2)),
        col("c_year", "YEAR", ft(tp::YEAR, flag::UNSIGNED | flag::ZEROFILL, 4, 0)),
        col("c_enum", "ENUM('a','b','c')", e),
        col("c_set", "SET('x','y','z')", s),
        col("c_bit", "BIT(10)", ft(tp::BIT, flag::UNSIGNED, 10, 0)),
        col("c_json", "JSON", ft(tp::JSON, flag::BINARY, 4294967295, 0)),
    ]
}

/// The columns of a table of `kind`, key columns first.
pub fn columns(kind: Kind) -> Vec<Col> {
    let pk = flag::NOT_NULL | flag::PRI_KEY | flag::NO_DEFAULT_VALUE;
    match kind {
        Kind::Types => {
            let mut v = vec![col("id", "BIGINT NOT NULL", ft(tp::LONGLONG, pk, 20, 0))];
            v.extend(typed_columns());
            v
        }
        Kind::Composite => vec![
            col("a", "VARCHAR(32) NOT NULL", text_ft(tp::VARCHAR, pk, 32)),
            col("b", "INT NOT NULL", ft(tp::LONG, pk, 11, 0)),
            col("u", "BIGINT", ft(tp::LONGLONG, flag::UNIQUE_KEY, 20, 0)),
            col("v", "VARCHAR(255)", text_ft(tp::VARCHAR, 0, 255)),
            col("d", "DECIMAL(12,3)", ft(tp::NEWDECIMAL, 0, 12, 3)),
            col("t", "DATETIME", ft(tp::DATETIME, 0, 19, 0)),
        ],
        Kind::NoPk => vec![
            col("k", "BIGINT NOT NULL", ft(tp::LONGLONG, flag::NOT_NULL | flag::MULTIPLE_KEY | flag::NO_DEFAULT_VALUE, 20, 0)),
            col("v", "VARCHAR(64)", text_ft(tp::VARCHAR, 0, 64)),
            col("n", "INT", ft(tp::LONG, 0, 11, 0)),
            col("j", "JSON", ft(tp::JSON, flag::BINARY, 4294967295, 0)),
        ],
        Kind::Unsigned => vec![
            col("id", "BIGINT UNSIGNED NOT NULL", ft(tp::LONGLONG, pk | flag::UNSIGNED, 20, 0)),
            col("name", "VARCHAR(40)", text_ft(tp::VARCHAR, flag::UNIQUE_KEY, 40)),
            col("amount", "DECIMAL(30,10)", ft(tp::NEWDECIMAL, 0, 30, 10)),
            col("at", "TIME", ft(tp::DURATION, 0, 10, 0)),
        ],
    }
}

/// Key and index clauses of the CREATE TABLE of `kind`.
fn key_clauses(kind: Kind) -> Vec<String> {
    match kind {
        Kind::Types => vec!["PRIMARY KEY (`id`)".into()],
        Kind::Composite => vec!["PRIMARY KEY (`a`, `b`)".into(), "UNIQUE KEY `uk_u` (`u`)".into()],
        Kind::NoPk => vec!["KEY `idx_k` (`k`)".into()],
        Kind::Unsigned => vec!["PRIMARY KEY (`id`)".into(), "UNIQUE KEY `uk_name` (`name`)".into()],
    }
}

/// `CREATE TABLE` text of a table of `kind`.
pub fn create_sql(db: &str, table: &str, kind: Kind) -> String {
    let mut parts: Vec<String> = columns(kind).iter().map(|c| format!("`{}` {}", c.name, c.sql)).collect();
    parts.extend(key_clauses(kind));
    format!(
        "CREATE TABLE `{db}`.`{table}` ({}) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        parts.join(", ")
    )
}

/// The `TableInfo` TiDB would record for a new table of `kind`; column ids 1.., index ids 1...
pub fn table_info(id: i64, name: &str, kind: Kind) -> TableInfo {
    let cols = columns(kind);
    let infos: Vec<ColumnInfo> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| ColumnInfo {
            id: i as i64 + 1,
            name: CIStr::new(&c.name),
            offset: i as i64,
            field_type: c.ft.clone(),
            ..ColumnInfo::default()
        })
        .collect();
    let idx_col = |name: &str| {
        let offset = cols.iter().position(|c| c.name == name).unwrap_or(0) as i64;
        IndexColumn { name: CIStr::new(name), offset, length: -1 }
    };
    let index = |id: i64, name: &str, cols: &[&str], unique: bool, primary: bool| IndexInfo {
        id,
        idx_name: CIStr::new(name),
        tbl_name: CIStr::default(),
        idx_cols: cols.iter().map(|c| idx_col(c)).collect(),
        state: schema_state::PUBLIC,
        is_unique: unique,
        is_primary: primary,
        ..IndexInfo::default()
    };
    let (indexes, pk_is_handle, common) = match kind {
        Kind::Types => (vec![], true, false),
        Kind::Composite => (
            vec![index(1, "PRIMARY", &["a", "b"], true, true), index(2, "uk_u", &["u"], true, false)],
            false,
            true,
        ),
        Kind::NoPk => (vec![index(1, "idx_k", &["k"], false, false)], false, false),
        Kind::Unsigned => (vec![index(1, "uk_name", &["name"], true, false)], true, false),
    };
    TableInfo {
        id,
        name: CIStr::new(name),
        charset: "utf8mb4".into(),
        collate: "utf8mb4_bin".into(),
        max_col_id: infos.len() as i64,
        max_idx_id: indexes.len() as i64,
        cols: infos,
        index_info: if indexes.is_empty() { None } else { Some(indexes) },
        pk_is_handle,
        is_common_handle: common,
        common_handle_version: u16::from(common),
        ..TableInfo::default()
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "''".into();
    }
    let mut s = String::from("X'");
    for x in b {
        s.push_str(&format!("{x:02X}"));
    }
    s.push('\'');
    s
}

fn word(rng: &mut SmallRng, len: usize) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-";
    let s: String = (0..len).map(|_| char::from(A[rng.random_range(0..A.len())])).collect();
    s.trim_end().to_owned()
}

/// A random SQL literal for a column of type `ft` (NULL sometimes when `nullable`); `large` is the
/// size of blob/text values when a large row is wanted.
pub fn random_literal(rng: &mut SmallRng, ft: &FieldType, nullable: bool, large: Option<usize>) -> String {
    if nullable && rng.random_ratio(1, 10) {
        return "NULL".into();
    }
    let unsigned = ft.is_unsigned();
    match ft.tp {
        tp::TINY => if unsigned { rng.random_range(0..=255u16).to_string() } else { rng.random_range(-128..=127i16).to_string() },
        tp::SHORT => rng.random_range(-32768..=32767i32).to_string(),
        tp::INT24 => rng.random_range(-8388608..=8388607i32).to_string(),
        tp::LONG => if unsigned { rng.random::<u32>().to_string() } else { rng.random::<i32>().to_string() },
        tp::LONGLONG => if unsigned { rng.random::<u64>().to_string() } else { rng.random::<i64>().to_string() },
        // Values exactly representable in binary at FLOAT/DOUBLE precision.
        tp::FLOAT => format!("{}", f64::from(rng.random_range(-100_000i32..100_000)) / 4.0),
        tp::DOUBLE => format!("{}", rng.random_range(-1_000_000_000i64..1_000_000_000) as f64 / 1024.0),
        tp::NEWDECIMAL => {
            let int_digits = (ft.flen - ft.decimal).clamp(1, 18) as u32;
            let frac = ft.decimal.clamp(0, 9) as u32;
            let i = rng.random_range(0..10u64.pow(int_digits.min(18)));
            let f = if frac > 0 { rng.random_range(0..10u64.pow(frac)) } else { 0 };
            let sign = if rng.random_bool(0.3) { "-" } else { "" };
            if frac > 0 { format!("{sign}{i}.{f:0w$}", w = frac as usize) } else { format!("{sign}{i}") }
        }
        tp::STRING | tp::VARCHAR | tp::BLOB | tp::MEDIUM_BLOB | tp::LONG_BLOB | tp::TINY_BLOB => {
            let binary = ft.charset == "binary";
            let max = match (ft.tp, large) {
                (tp::BLOB | tp::MEDIUM_BLOB | tp::LONG_BLOB, Some(n)) => n,
                (tp::BLOB | tp::MEDIUM_BLOB | tp::LONG_BLOB, None) => 200,
                _ => ft.flen.clamp(1, 64) as usize,
            };
            let len = if large.is_some() && ft.flen > 1000 { max } else { rng.random_range(0..=max) };
            if binary {
                let mut b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                if ft.tp == tp::STRING {
                    // BINARY(n) pads with zero bytes; keep values that do not end in one.
                    while b.last() == Some(&0) {
                        b.pop();
                    }
                }
                hex(&b)
            } else {
                quote(&word(rng, len))
            }
        }
        tp::DATE => format!("'{:04}-{:02}-{:02}'", rng.random_range(1970..2038), rng.random_range(1..=12), rng.random_range(1..=28)),
        tp::DATETIME | tp::TIMESTAMP => {
            let year = if ft.tp == tp::TIMESTAMP { rng.random_range(1971..2037) } else { rng.random_range(1000..9999) };
            let fsp = ft.decimal.clamp(0, 6) as usize;
            let us = rng.random_range(0..1_000_000u32);
            let frac = if fsp > 0 { format!(".{}", &format!("{us:06}")[..fsp]) } else { String::new() };
            format!(
                "'{year:04}-{:02}-{:02} {:02}:{:02}:{:02}{frac}'",
                rng.random_range(1..=12),
                rng.random_range(1..=28),
                rng.random_range(0..24),
                rng.random_range(0..60),
                rng.random_range(0..60)
            )
        }
        tp::DURATION => {
            let fsp = ft.decimal.clamp(0, 6) as usize;
            let sign = if rng.random_bool(0.2) { "-" } else { "" };
            let us = rng.random_range(0..1_000_000u32);
            let frac = if fsp > 0 { format!(".{}", &format!("{us:06}")[..fsp]) } else { String::new() };
            format!("'{sign}{}:{:02}:{:02}{frac}'", rng.random_range(0..839), rng.random_range(0..60), rng.random_range(0..60))
        }
        tp::YEAR => rng.random_range(1901..=2155).to_string(),
        tp::ENUM => quote(&ft.elems()[rng.random_range(0..ft.elems().len().max(1)).min(ft.elems().len().saturating_sub(1))]),
        tp::SET => {
            let picked: Vec<&str> = ft.elems().iter().filter(|_| rng.random_bool(0.5)).map(|s| s.as_str()).collect();
            quote(&picked.join(","))
        }
        tp::BIT => {
            let bits = ft.flen.clamp(1, 64) as u32;
            let v: u64 = if bits == 64 { rng.random() } else { rng.random_range(0..(1u64 << bits)) };
            format!("b'{v:b}'")
        }
        tp::JSON => {
            let v = serde_json::json!({
                "n": rng.random_range(-1000..1000),
                "s": word(rng, 8),
                "f": f64::from(rng.random_range(0..1000)) / 8.0,
                "a": [rng.random_bool(0.5), null, rng.random::<u32>()],
            });
            // Stored as TiDB renders it (`", "`, `": "`, sorted keys, `1.0`), so that the upstream text
            // is what a TiDB upstream would return and a text comparison with the downstream is fair.
            match drainer::tidb::json::Json::from_serde(&v) {
                Ok(j) => quote(&j.to_text()),
                Err(_) => quote(&v.to_string()),
            }
        }
        _ => "NULL".into(),
    }
}
