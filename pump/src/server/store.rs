//! The storage the server runs on: `pump-store`, re-exported under one name.
pub use pump_store::{Committed, Kind, Record, Store, StoreConfig, StoreError};
