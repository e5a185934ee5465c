//! The `keytrap` command as a library: configuration, `serve`, `migrate` and `mint`, so
//! the benchmark and tests can run the real server code.

pub mod config;
pub mod health;
pub mod http;
pub mod mint;
pub mod serve;
pub mod worker;
