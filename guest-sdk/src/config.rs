//! The agent's own read-only settings, written in its policy under
//! `[capabilities.config.values]`. For settings only: secrets stay on the
//! host, which adds them to outbound requests where the policy says
//! (`secret_headers`); no interface lets an agent read one.

use crate::bindings::chimera::agent::config;

/// The setting `key`, or `None`.
pub fn get(key: &str) -> Option<String> {
    config::get(key)
}

/// Every setting, in key order.
pub fn all() -> Vec<(String, String)> {
    config::get_all()
}
