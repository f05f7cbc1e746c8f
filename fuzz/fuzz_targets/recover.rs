//! Arbitrary bytes as the active segment of a store directory: opening must not panic; it either fails
//! with an error or recovers, and then every stored record it can look up passes its CRC.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pump_store::recovery_check::open_image(data);
});
