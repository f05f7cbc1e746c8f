//! One test binary for all process-level tests; modules are named `area_behaviour`.

mod client_pumps;
mod ctl_diff;
mod ctl_meta;
mod ctl_nodes;
mod ctl_status;
mod ctl_tls;
mod ctl_util;
mod drainer_cli;
mod fault;
mod deploy_metrics;
mod drainer_pipeline;
mod e2e_options;
mod harness_services;
mod kafka_sink;
mod mysql_sink;
mod node_registry;
mod pump_config;
mod pump_robust;
mod pump_server;
mod pump_states;
mod pump_util;
mod reparo_files;
mod sink_items;
mod standin_pumps;
mod tls_cluster;
mod tso_etcd;
