//! Behaviour of the store through its public API, against real files in a temp dir: the same suite
//! (`suite/store.rs`) against one shard (layout 1, the unsharded directory) and four shards, with the
//! std backend and with the io_uring pipeline.

mod one_shard {
    const SHARDS: usize = 1;
    const BACKEND: pump_store::IoBackend = pump_store::IoBackend::Std;
    include!("suite/store.rs");
}

mod four_shards {
    const SHARDS: usize = 4;
    const BACKEND: pump_store::IoBackend = pump_store::IoBackend::Std;
    include!("suite/store.rs");
}

mod one_shard_uring {
    const SHARDS: usize = 1;
    const BACKEND: pump_store::IoBackend = pump_store::IoBackend::Uring;
    include!("suite/store.rs");
}

mod four_shards_uring {
    const SHARDS: usize = 4;
    const BACKEND: pump_store::IoBackend = pump_store::IoBackend::Uring;
    include!("suite/store.rs");
}
