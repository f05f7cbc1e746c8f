//! Generated sink messages: `slave.binlog` (Kafka "secondary binlog") and `pb_binlog` (file sink).

/// Package `slave.binlog`: one message per upstream transaction, written to Kafka.
#[allow(missing_docs, clippy::all)]
pub mod slave {
    include!(concat!(env!("OUT_DIR"), "/slave.binlog.rs"));
}

/// Package `pb_binlog`: the payload of one file-sink record.
#[allow(missing_docs, clippy::all, non_camel_case_types)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/pb_binlog.rs"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn secondary_binlog_ddl_golden() {
        let bytes: Vec<u8> = vec![
            0x08, 0x01, // type (1) = DDL
            0x10, 0x05, // commit_ts (2) = 5
            0x22, 0x07, // ddl_data (4), 7 bytes
            0x0a, 0x01, b'd', // schema_name (1) = "d"
            0x1a, 0x02, b'q', b'1', // ddl_query (3) = "q1"
        ];
        let b = slave::Binlog::decode(bytes.as_slice()).unwrap();
        assert_eq!(b.r#type(), slave::BinlogType::Ddl);
        assert_eq!(b.commit_ts(), 5);
        let ddl = b.ddl_data.as_ref().unwrap();
        assert_eq!(ddl.schema_name(), "d");
        assert_eq!(ddl.table_name, None);
        assert_eq!(ddl.ddl_query(), b"q1");
        assert_eq!(b.encode_to_vec(), bytes);
    }

    #[test]
    fn secondary_binlog_required_fields_are_plain_values() {
        // TableMutation.type (1) and .row (2) are proto2 `required`: prost gives them as plain values.
        let ok: Vec<u8> = vec![0x08, 0x02, 0x12, 0x02, 0x0a, 0x00];
        let m = slave::TableMutation::decode(ok.as_slice()).unwrap();
        assert_eq!(m.r#type(), slave::MutationType::Delete);
        assert_eq!(m.row.columns.len(), 1);
        assert!(m.row.columns[0].is_null.is_none());
        assert_eq!(m.encode_to_vec(), ok);
    }

    #[test]
    fn secondary_column_values() {
        // int64_value (2) = -1 as a 10-byte varint; string_value (6) = "x"; is_null (1) = true.
        let bytes: Vec<u8> =
            vec![0x08, 0x01, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x32, 0x01, b'x'];
        let c = slave::Column::decode(bytes.as_slice()).unwrap();
        assert_eq!(c.is_null, Some(true));
        assert_eq!(c.int64_value, Some(-1));
        assert_eq!(c.string_value(), "x");
        assert_eq!(c.encode_to_vec(), bytes);
    }

    #[test]
    fn pb_binlog_dml_golden() {
        let col = pb::Column {
            name: Some("a".into()),
            tp: Some(vec![3]),
            mysql_type: Some("int".into()),
            value: Some(vec![0x08, 0x02]),
            changed_value: None,
        };
        // name (1) "a"; tp (2) [3]; mysql_type (3) "int"; value (4) [08 02]
        let col_bytes: Vec<u8> =
            vec![0x0a, 0x01, b'a', 0x12, 0x01, 0x03, 0x1a, 0x03, b'i', b'n', b't', 0x22, 0x02, 0x08, 0x02];
        assert_eq!(col.encode_to_vec(), col_bytes);

        let mut bytes: Vec<u8> = vec![
            0x08, 0x00, // tp (1) = DML
            0x10, 0x09, // commit_ts (2) = 9
            0x1a, 0x1b, // dml_data (3), 27 bytes
            0x0a, 0x19, // events (1), 25 bytes
            0x0a, 0x01, b's', // schema_name (1)
            0x12, 0x01, b't', // table_name (2)
            0x18, 0x00, // tp (3) = Insert
            0x22, 0x0f, // row (4), 15 bytes
        ];
        bytes.extend_from_slice(&col_bytes);
        let b = pb::Binlog::decode(bytes.as_slice()).unwrap();
        assert_eq!(b.tp(), pb::BinlogType::Dml);
        let ev = &b.dml_data.as_ref().unwrap().events[0];
        assert_eq!((ev.schema_name(), ev.table_name(), ev.tp()), ("s", "t", pb::EventType::Insert));
        assert_eq!(pb::Column::decode(ev.row[0].as_slice()).unwrap(), col);
        assert_eq!(b.encode_to_vec(), bytes);
    }
}
