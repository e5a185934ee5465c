//! The `keytrap` command as a library: configuration, `serve`, `migrate`, `mint`, `render`, `plant` and `verify`, so
//! the benchmark and tests can run the real server code.

pub mod config;
pub mod health;
pub mod http;
pub mod mint;
pub mod plant;
pub mod serve;
pub mod target;
pub mod worker;
