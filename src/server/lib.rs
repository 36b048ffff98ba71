//! Tandem's server: the edge around the sans-IO core (`tandem-core`). Sockets and workers
//! ([`edge`]), the LMDB store and its group commit ([`store`]), the partner link's TLS
//! ([`tls`]), reading the configuration ([`config_file`]) and the `tandem` command line
//! ([`cli`]).
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod cli;
pub mod config_file;
pub mod edge;
pub mod histogram;
pub mod import_kea;
pub mod sd_notify;
pub mod store;
pub mod tls;
