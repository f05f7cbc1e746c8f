//! Arbitrary bytes as a segment image: the scan must never panic and never return a record whose
//! bytes fail their CRC (`check_scan_invariants` is the oracle).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pump_store::format::check_scan_invariants(data);
    let _ = pump_store::format::decode_record(data);
    let _ = pump_store::format::Footer::decode(data);
    let _ = pump_store::format::decode_seal(data, 0, data.len() as u64);
});
