//! Integration-test helpers.

pub mod net;
