//! Property tests: every encoder round-trips through its decoder, and no byte string makes a decoder
//! panic.

use proptest::prelude::*;

use super::codec::{Datum, Handle, decode_one, encode_key, encode_value, record_key};
use super::decimal::Decimal;
use super::json::Json;
use super::row::{decode_insert_row, decode_row, decode_update_row, encode_insert_row, encode_row, encode_update_row};
use super::time::Time;

fn decimal() -> impl Strategy<Value = Decimal> {
    (1u8..=65)
        .prop_flat_map(|p| (Just(p), 0u8..=p.min(30)))
        .prop_flat_map(|(p, f)| {
            let int_digits = usize::from(p - f);
            (Just(p), Just(f), any::<bool>(), proptest::collection::vec(0u8..10, int_digits), proptest::collection::vec(0u8..10, usize::from(f)))
        })
        .prop_map(|(p, f, neg, i, fr)| {
            let digits = |v: &[u8]| v.iter().map(|d| char::from(b'0' + d)).collect::<String>();
            let text = format!("{}{}.{}", if neg { "-" } else { "" }, digits(&i), digits(&fr));
            Decimal::parse(&text, p, f).unwrap()
        })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (-1e300f64..1e300).prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn datum() -> impl Strategy<Value = Datum> {
    prop_oneof![
        Just(Datum::Null),
        any::<i64>().prop_map(Datum::I64),
        any::<u64>().prop_map(Datum::U64),
        any::<f64>().prop_filter("NaN never equals itself", |f| !f.is_nan()).prop_map(Datum::F64),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Datum::Bytes),
        decimal().prop_map(Datum::Decimal),
        any::<i64>().prop_map(Datum::Duration),
        json_value().prop_map(|v| Datum::Json(Json::from_serde(&v).unwrap())),
        Just(Datum::Max),
    ]
}

fn row() -> impl Strategy<Value = Vec<(i64, Datum)>> {
    proptest::collection::vec((any::<i64>(), datum()), 0..8)
}

proptest! {
    #[test]
    fn value_encoding_round_trips(d in datum(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
        let mut b = Vec::new();
        encode_value(&mut b, &d);
        b.extend_from_slice(&tail);
        let (back, rest) = decode_one(&b).unwrap();
        prop_assert_eq!(back, d);
        prop_assert_eq!(rest, &tail[..]);
    }

    #[test]
    fn key_encoding_round_trips(d in datum()) {
        let mut b = Vec::new();
        encode_key(&mut b, &d);
        let (back, rest) = decode_one(&b).unwrap();
        prop_assert_eq!(back, d);
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn key_encoding_preserves_order(a in any::<i64>(), b in any::<i64>(), x in proptest::collection::vec(any::<u8>(), 0..20), y in proptest::collection::vec(any::<u8>(), 0..20)) {
        let k = |d: Datum| { let mut v = Vec::new(); encode_key(&mut v, &d); v };
        prop_assert_eq!(a.cmp(&b), k(Datum::I64(a)).cmp(&k(Datum::I64(b))));
        prop_assert_eq!(x.cmp(&y), k(Datum::Bytes(x.clone())).cmp(&k(Datum::Bytes(y.clone()))));
        prop_assert_eq!(a.cmp(&b), record_key(1, &Handle::Int(a)).cmp(&record_key(1, &Handle::Int(b))));
    }

    #[test]
    fn decimal_bin_round_trips(d in decimal()) {
        let bin = d.to_bin();
        prop_assert_eq!(bin.len(), Decimal::bin_size(d.precision(), d.frac()).unwrap());
        let back = Decimal::from_bin(&bin, d.precision(), d.frac()).unwrap();
        prop_assert_eq!(back.to_string(), d.to_string());
        prop_assert_eq!(Decimal::parse(&d.to_string(), d.precision(), d.frac()).unwrap(), d);
    }

    #[test]
    fn decimal_bin_preserves_order(a in -1_000_000i64..1_000_000, b in -1_000_000i64..1_000_000) {
        let enc = |v: i64| {
            let sign = if v < 0 { "-" } else { "" };
            let a = v.unsigned_abs();
            Decimal::parse(&format!("{sign}{}.{:02}", a / 100, a % 100), 12, 2).unwrap()
        };
        prop_assert_eq!(a.cmp(&b), enc(a).to_bin().cmp(&enc(b).to_bin()));
    }

    #[test]
    fn packed_time_round_trips(y in 0u16..=9999, mo in 0u8..=12, d in 0u8..=31, h in 0u8..24, mi in 0u8..60, s in 0u8..60, us in 0u32..1_000_000) {
        let t = Time { year: y, month: mo, day: d, hour: h, minute: mi, second: s, microsecond: us };
        prop_assert_eq!(Time::from_packed(t.to_packed()).unwrap(), t);
        prop_assert_eq!(Time::parse(&t.datetime_string(6)).unwrap(), t);
    }

    #[test]
    fn json_round_trips_through_binary_and_text(v in json_value()) {
        let j = Json::from_serde(&v).unwrap();
        let back = Json::from_raw(j.type_code(), j.value_bytes().to_vec(), 0).unwrap();
        prop_assert_eq!(&back, &j);
        prop_assert_eq!(back.to_serde(), v);
        prop_assert_eq!(Json::parse_text(&j.to_text()).unwrap(), j);
    }

    #[test]
    fn rows_round_trip(cols in row(), handle in any::<i64>()) {
        let mut b = Vec::new();
        encode_row(&mut b, &cols);
        prop_assert_eq!(&decode_row(&b).unwrap(), &cols);
        let ins = encode_insert_row(&Handle::Int(handle), &cols);
        prop_assert_eq!(decode_insert_row(&ins, 1).unwrap(), (vec![Datum::I64(handle)], cols.clone()));
    }

    #[test]
    fn update_rows_round_trip(vals in proptest::collection::vec((datum(), datum()), 0..6)) {
        // Both halves carry the same column ids, as TiDB writes them.
        let old: Vec<(i64, Datum)> = vals.iter().enumerate().map(|(i, (o, _))| (i as i64 + 1, o.clone())).collect();
        let new: Vec<(i64, Datum)> = vals.iter().enumerate().map(|(i, (_, n))| (i as i64 + 1, n.clone())).collect();
        let b = encode_update_row(&old, &new);
        prop_assert_eq!(decode_update_row(&b).unwrap(), (old, new));
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200), n in 0usize..4, p in 0u8..70, f in 0u8..35) {
        let _ = decode_one(&b);
        let _ = decode_row(&b);
        let _ = decode_update_row(&b);
        let _ = decode_insert_row(&b, n);
        let _ = Decimal::from_bin(&b, p, f);
        if let Some((&tc, rest)) = b.split_first() {
            if let Ok(j) = Json::from_raw(tc, rest.to_vec(), 0) {
                let _ = j.to_text();
            }
        }
        if b.len() >= 8 {
            let _ = Time::from_packed(u64::from_le_bytes(b[..8].try_into().unwrap()));
        }
    }

    #[test]
    fn arbitrary_bytes_after_a_flag_never_panic(flag in prop_oneof![0u8..=10, Just(250u8)], b in proptest::collection::vec(any::<u8>(), 0..120)) {
        let mut v = vec![flag];
        v.extend_from_slice(&b);
        let _ = decode_one(&v);
        let mut j = vec![10u8, 0x01];
        j.extend_from_slice(&b);
        let _ = decode_one(&j);
        let mut j = vec![10u8, 0x03];
        j.extend_from_slice(&b);
        let _ = decode_one(&j);
    }
}
