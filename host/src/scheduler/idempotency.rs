//! Idempotency keys in memory: which task each live key names, and what it
//! was submitted with, so a repeat gets the first task's id and a different
//! request under the same key is refused. Keys expire after the
//! scheduler's time to live; the journal keeps them for a restart.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};

use super::task::{IdempotencyEntry, TaskId};

/// What a submission's key means now.
pub(super) enum Reuse {
    /// Unused (or expired): the submission may take it.
    Free,
    /// Names this task, submitted with the same agent and input.
    Same(TaskId),
    /// Names this task, submitted with another agent or input.
    Conflict(TaskId),
}

#[derive(Default)]
pub(super) struct Idempotency {
    keys: HashMap<String, IdempotencyEntry>,
    /// Keys in the order they expire (one time to live for all: insertion order).
    expiry: VecDeque<(u64, String)>,
}

impl Idempotency {
    /// What identifies a submission's request: its agent and input.
    pub fn digest(agent: &str, input: &str) -> String {
        let mut h = Sha256::new();
        h.update(agent.as_bytes());
        h.update([0]);
        h.update(input.as_bytes());
        format!("{:x}", h.finalize())
    }

    /// What `key` means for a submission of `input` to `agent` at `now_ms`.
    pub fn reuse(&mut self, key: &str, agent: &str, input: &str, now_ms: u64) -> Reuse {
        self.expire(now_ms);
        match self.keys.get(key) {
            None => Reuse::Free,
            Some(entry) if entry.digest == Self::digest(agent, input) => Reuse::Same(entry.id),
            Some(entry) => Reuse::Conflict(entry.id),
        }
    }

    pub fn insert(&mut self, entry: IdempotencyEntry) {
        self.expiry.push_back((entry.expires_ms, entry.key.clone()));
        self.keys.insert(entry.key.clone(), entry);
    }

    pub fn remove(&mut self, key: &str) {
        self.keys.remove(key);
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some((at, _)) = self.expiry.front() {
            if *at > now_ms {
                break;
            }
            let (at, key) = self.expiry.pop_front().expect("looked at above");
            // A key given back and taken again has a later expiry of its own.
            if self.keys.get(&key).is_some_and(|e| e.expires_ms == at) {
                self.keys.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_task_until_it_expires_and_only_for_the_same_request() {
        let mut keys = Idempotency::default();
        let id = TaskId::from_u128(7);
        let digest = Idempotency::digest("echo", "hi");
        keys.insert(IdempotencyEntry { key: "k".into(), id, digest, expires_ms: 100 });
        assert!(matches!(keys.reuse("k", "echo", "hi", 99), Reuse::Same(i) if i == id));
        assert!(matches!(keys.reuse("k", "echo", "other", 99), Reuse::Conflict(i) if i == id));
        assert!(matches!(keys.reuse("k", "other", "hi", 99), Reuse::Conflict(i) if i == id));
        // Agent and input are told apart: ("ab", "c") is not ("a", "bc").
        assert_ne!(Idempotency::digest("ab", "c"), Idempotency::digest("a", "bc"));
        assert!(matches!(keys.reuse("k", "echo", "hi", 100), Reuse::Free));
        assert!(keys.keys.is_empty() && keys.expiry.is_empty());
    }
}
