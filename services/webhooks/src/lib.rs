//! keytrap-webhooks: everything about an alert between the outbox row and the receiver.
pub mod format;
pub mod retry;
pub mod sign;
pub mod ssrf;
