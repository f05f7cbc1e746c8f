//! Generated protobuf messages and gRPC services of package `binlog`, and PD's `pdpb` ([`pdpb`]).
//!
//! Upstream marks most proto2 scalars `nullable=false`, so Go always writes them even when zero; our
//! encoders set them explicitly (`Some(0)`) where byte-compatibility matters, and decoders treat a
//! missing field as zero through the generated accessors.

#![allow(missing_docs, clippy::all)]

tonic::include_proto!("binlog");

/// PD's `pdpb.PD` service, the part TiDB-Binlog uses (members, TSO, a key's region and a store):
/// `pump/proto/pdpb.proto`.
pub mod pdpb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("pdpb");
}

/// Regions, peers and stores as PD describes them: `pump/proto/metapb.proto`.
pub mod metapb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("metapb");
}

/// TiKV's `tikvpb.Tikv` service, the two calls the pump's resolver makes: `pump/proto/tikvpb.proto`.
pub mod tikvpb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("tikvpb");
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    // Golden vectors, derived by hand from the field numbers and wire types:
    // key byte = (field_number << 3) | wire_type; varint = 0, length-delimited = 2.

    #[test]
    fn commit_binlog_decodes_from_hand_built_bytes() {
        let bytes: Vec<u8> = vec![
            0x08, 0x01, // tp (1, varint) = Commit
            0x10, 0x0a, // start_ts (2, varint) = 10
            0x18, 0x96, 0x01, // commit_ts (3, varint) = 150
            0x22, 0x02, b'p', b'k', // prewrite_key (4, bytes) = "pk"
            0x38, 0x00, // ddl_job_id (7, varint) = 0
        ];
        let b = Binlog::decode(bytes.as_slice()).unwrap();
        assert_eq!(b.tp(), BinlogType::Commit);
        assert_eq!(b.start_ts(), 10);
        assert_eq!(b.commit_ts(), 150);
        assert_eq!(b.prewrite_key(), b"pk");
        assert_eq!(b.ddl_job_id, Some(0));
        assert_eq!(b.prewrite_value, None);
        assert_eq!(b.encode_to_vec(), bytes);
    }

    #[test]
    fn empty_payload_is_the_health_probe() {
        let b = Binlog::decode(&[][..]).unwrap();
        assert_eq!(b.tp(), BinlogType::Prewrite);
        assert_eq!((b.start_ts(), b.commit_ts()), (0, 0));
    }

    #[test]
    fn table_mutation_accepts_unpacked_and_packed_repeated_scalars() {
        // proto2 repeated enums are unpacked on the wire: one key per element.
        let unpacked: Vec<u8> = vec![
            0x08, 0x2a, // table_id (1) = 42
            0x12, 0x01, 0xff, // inserted_rows (2) = [0xff]
            0x38, 0x00, // sequence (7) = Insert
            0x38, 0x04, // sequence (7) = DeleteRow
        ];
        let m = TableMutation::decode(unpacked.as_slice()).unwrap();
        assert_eq!(m.table_id(), 42);
        assert_eq!(m.inserted_rows, vec![vec![0xff]]);
        assert_eq!(m.sequence().collect::<Vec<_>>(), [MutationType::Insert, MutationType::DeleteRow]);
        // prost re-encodes proto2 repeated fields unpacked, byte for byte.
        assert_eq!(m.encode_to_vec(), unpacked);

        // The packed form (one length-delimited field 7) must decode the same.
        let packed: Vec<u8> = vec![0x08, 0x2a, 0x12, 0x01, 0xff, 0x3a, 0x02, 0x00, 0x04];
        assert_eq!(TableMutation::decode(packed.as_slice()).unwrap(), m);
    }

    #[test]
    fn prewrite_value_nests_mutations() {
        let bytes: Vec<u8> = vec![
            0x08, 0x07, // schema_version (1) = 7
            0x12, 0x02, 0x08, 0x05, // mutations (2) = [TableMutation{table_id: 5}]
        ];
        let pv = PrewriteValue::decode(bytes.as_slice()).unwrap();
        assert_eq!(pv.schema_version(), 7);
        assert_eq!(pv.mutations.len(), 1);
        assert_eq!(pv.mutations[0].table_id(), 5);
        assert_eq!(pv.encode_to_vec(), bytes);
    }

    #[test]
    fn pull_request_and_entity_use_spec_field_numbers() {
        let req = PullBinlogReq { cluster_id: 1, start_from: Some(Pos { suffix: 0, offset: 300 }) };
        // clusterID (1) = 1; startFrom (2) = { offset (2) = 300 = 0xac 0x02 }
        assert_eq!(req.encode_to_vec(), vec![0x08, 0x01, 0x12, 0x03, 0x10, 0xac, 0x02]);

        let bytes: Vec<u8> = vec![
            0x0a, 0x0b, // entity (1), 11 bytes
            0x12, 0x03, 1, 2, 3, // payload (2)
            0x22, 0x04, 0x08, 0x01, 0x10, 0x02, // meta (4) = {startTs 1, commitTs 2}
        ];
        let resp = PullBinlogResp::decode(bytes.as_slice()).unwrap();
        let e = resp.entity.unwrap();
        assert_eq!(e.payload, vec![1, 2, 3]);
        assert_eq!(e.meta, Some(Meta { start_ts: 1, commit_ts: 2 }));
    }

    #[test]
    fn write_request_carries_cluster_id_and_payload() {
        let bytes: Vec<u8> = vec![0x08, 0x07, 0x12, 0x02, 0x08, 0x01];
        let req = WriteBinlogReq::decode(bytes.as_slice()).unwrap();
        assert_eq!(req.cluster_id, 7);
        assert_eq!(Binlog::decode(&req.payload[..]).unwrap().tp(), BinlogType::Commit);
        let resp = WriteBinlogResp { errmsg: "x".into() };
        assert_eq!(resp.encode_to_vec(), vec![0x0a, 0x01, b'x']);
    }
}
