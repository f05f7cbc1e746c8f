//! pump-store's integration tests, through its public API against real files: one test binary, one
//! module per topic.

mod crash;
mod fuzz_regress;
mod kill9;
mod old_format;
mod shards;
mod store;
