//! Behaviour of the store through its public API, against real files in a temp dir: the same suite
//! (`suite/store.rs`) against one shard (layout 1, the unsharded directory) and four shards.

mod one_shard {
    const SHARDS: usize = 1;
    include!("suite/store.rs");
}

mod four_shards {
    const SHARDS: usize = 4;
    include!("suite/store.rs");
}
