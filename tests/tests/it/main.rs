//! One test binary for all process-level tests; modules are named `area_behaviour`.

mod harness_services;
