//! The ready queue: five priority levels, FIFO within an agent, agents
//! taking turns within a level, and aging so that low levels still move
//! under a steady stream of high-priority work.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::TaskId;

/// Task priority, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Critical,
    High,
    #[default]
    Normal,
    Low,
    Background,
}

impl Priority {
    /// All levels, highest first.
    pub const ALL: [Priority; 5] =
        [Priority::Critical, Priority::High, Priority::Normal, Priority::Low, Priority::Background];

    /// The lowercase name used in the API and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
            Priority::Background => "background",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown priority {s:?}; use critical, high, normal, low or background"))
    }
}

/// A task waiting in the queue.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The task's id.
    pub id: TaskId,
    /// The agent that runs it.
    pub agent: Arc<str>,
    /// When it was queued (for aging).
    pub since: Instant,
}

#[derive(Default)]
struct Level {
    per_agent: HashMap<Arc<str>, VecDeque<Queued>>,
    /// Agents with queued tasks, in turn order.
    turn: VecDeque<Arc<str>>,
}

impl Level {
    /// The first agent in turn order that may run now, and its oldest task.
    fn next_runnable(&self, runnable: &impl Fn(&str) -> bool) -> Option<(usize, &Queued)> {
        self.turn.iter().enumerate().find(|(_, a)| runnable(a)).map(|(i, a)| (i, &self.per_agent[a][0]))
    }
}

/// The scheduler's ready queue: five priority levels, FIFO per agent,
/// agents taking turns within a level, and aging. Public so embedders and
/// benchmarks can use it on its own; the scheduler keeps it behind its lock.
#[derive(Default)]
pub struct ReadyQueue {
    levels: [Level; 5],
    len: usize,
}

impl ReadyQueue {
    /// Tasks queued, over all levels.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tasks queued at `priority`.
    pub fn len_at(&self, priority: Priority) -> usize {
        self.levels[priority.index()].per_agent.values().map(VecDeque::len).sum()
    }

    /// Queues `task` at `priority`, behind the agent's earlier tasks.
    pub fn push(&mut self, priority: Priority, task: Queued) {
        let level = &mut self.levels[priority.index()];
        let queue = level.per_agent.entry(task.agent.clone()).or_default();
        if queue.is_empty() {
            level.turn.push_back(task.agent.clone());
        }
        queue.push_back(task);
        self.len += 1;
    }

    /// Takes the next task to run. Each level offers the oldest task of the
    /// agent whose turn it is (skipping agents `runnable` rejects, e.g. at
    /// their concurrency cap); a level's offer is worth one level more for
    /// every `aging` it has waited, and the best offer wins (ties go to the
    /// higher level). The chosen agent goes to the back of its level's turn.
    pub fn pop(
        &mut self,
        now: Instant,
        aging: Duration,
        runnable: impl Fn(&str) -> bool,
    ) -> Option<(Priority, Queued)> {
        let aging = aging.as_secs_f64().max(1e-9);
        let mut best: Option<(f64, usize, usize)> = None;
        for (index, level) in self.levels.iter().enumerate() {
            if let Some((slot, head)) = level.next_runnable(&runnable) {
                let waited = now.saturating_duration_since(head.since).as_secs_f64();
                let score = index as f64 - (waited / aging).floor();
                if best.is_none_or(|(s, _, _)| score < s) {
                    best = Some((score, index, slot));
                }
            }
        }
        let (_, index, slot) = best?;
        let level = &mut self.levels[index];
        let agent = level.turn.remove(slot).expect("slot from next_runnable");
        let queue = level.per_agent.get_mut(&agent).expect("agent has a queue");
        let task = queue.pop_front().expect("queue is not empty");
        if queue.is_empty() {
            level.per_agent.remove(&agent);
        } else {
            level.turn.push_back(agent);
        }
        self.len -= 1;
        Some((Priority::ALL[index], task))
    }

    /// Removes a queued task; returns whether it was there.
    pub fn remove(&mut self, id: TaskId) -> bool {
        for level in &mut self.levels {
            let Some(agent) =
                level.per_agent.iter().find(|(_, q)| q.iter().any(|t| t.id == id)).map(|(a, _)| a.clone())
            else {
                continue;
            };
            let queue = level.per_agent.get_mut(&agent).unwrap();
            queue.retain(|t| t.id != id);
            if queue.is_empty() {
                level.per_agent.remove(&agent);
                level.turn.retain(|a| *a != agent);
            }
            self.len -= 1;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: u64, agent: &str, since: Instant) -> Queued {
        Queued { id: TaskId::from_u128(id.into()), agent: agent.into(), since }
    }

    fn n(task: Queued) -> u64 {
        task.id.as_u128() as u64
    }

    fn drain(queue: &mut ReadyQueue, now: Instant, aging: Duration) -> Vec<u64> {
        std::iter::from_fn(|| queue.pop(now, aging, |_| true).map(|(_, t)| n(t))).collect()
    }

    #[test]
    fn higher_priority_first_fifo_within() {
        let now = Instant::now();
        let mut queue = ReadyQueue::default();
        queue.push(Priority::Low, q(1, "a", now));
        queue.push(Priority::Critical, q(2, "a", now));
        queue.push(Priority::Normal, q(3, "a", now));
        queue.push(Priority::Critical, q(4, "a", now));
        queue.push(Priority::Background, q(5, "a", now));
        assert_eq!(drain(&mut queue, now, Duration::from_secs(3600)), [2, 4, 3, 1, 5]);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn agents_take_turns_within_a_level() {
        let now = Instant::now();
        let mut queue = ReadyQueue::default();
        for id in 1..=4 {
            queue.push(Priority::Normal, q(id, "noisy", now));
        }
        queue.push(Priority::Normal, q(10, "quiet", now));
        queue.push(Priority::Normal, q(11, "quiet", now));
        assert_eq!(drain(&mut queue, now, Duration::from_secs(3600)), [1, 10, 2, 11, 3, 4]);
    }

    #[test]
    fn old_low_priority_work_outranks_fresh_high_priority_work() {
        let start = Instant::now();
        let mut queue = ReadyQueue::default();
        queue.push(Priority::Background, q(1, "a", start));
        let later = start + Duration::from_secs(5);
        queue.push(Priority::Critical, q(2, "a", later));
        // After 5 s at 1 s per level, background (4) scores -1: ahead of critical (0).
        assert_eq!(queue.pop(later, Duration::from_secs(1), |_| true).map(|(_, t)| n(t)), Some(1));
        // Without enough aging, critical wins.
        let mut queue = ReadyQueue::default();
        queue.push(Priority::Background, q(1, "a", start));
        queue.push(Priority::Critical, q(2, "a", start));
        assert_eq!(
            queue.pop(start + Duration::from_secs(3), Duration::from_secs(1), |_| true).map(|(_, t)| n(t)),
            Some(2)
        );
    }

    #[test]
    fn agents_at_their_cap_are_skipped_and_removal_works() {
        let now = Instant::now();
        let mut queue = ReadyQueue::default();
        queue.push(Priority::Normal, q(1, "busy", now));
        queue.push(Priority::Normal, q(2, "free", now));
        queue.push(Priority::Normal, q(3, "free", now));
        assert_eq!(queue.pop(now, Duration::from_secs(1), |a| a != "busy").map(|(_, t)| n(t)), Some(2));
        assert!(queue.remove(TaskId::from_u128(3)));
        assert!(!queue.remove(TaskId::from_u128(3)));
        assert!(queue.pop(now, Duration::from_secs(1), |a| a != "busy").is_none());
        assert_eq!(queue.len_at(Priority::Normal), 1);
    }
}
