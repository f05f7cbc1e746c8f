//! One module per command group.

pub mod diff;
pub mod encrypt;
pub mod meta;
pub mod nodes;
pub mod prewrite;
pub mod safety;
pub mod status;
