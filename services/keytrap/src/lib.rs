//! The `keytrap` command as a library: configuration, `serve`, `migrate` and `mint`, so
//! the benchmark and tests can run the real server code.

pub mod config;
pub mod mint;
pub mod serve;
