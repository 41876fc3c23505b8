//! Scheduler metrics, registered in the host's registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::queue::{Priority, ReadyQueue};
use super::TaskStatus;
use crate::metrics::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabel {
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriorityLabel {
    priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinalLabels {
    agent: String,
    status: String,
}

pub(crate) struct SchedulerMetrics {
    submitted: Family<AgentLabel, Counter>,
    finished: Family<FinalLabels, Counter>,
    retries: Family<AgentLabel, Counter>,
    dead_letters: Family<AgentLabel, Counter>,
    queue_depth: Family<PriorityLabel, Gauge>,
    pub rejected: Counter,
    pub queue_wait: Histogram,
}

impl SchedulerMetrics {
    pub fn register(metrics: &Metrics) -> SchedulerMetrics {
        let m = SchedulerMetrics {
            submitted: Family::default(),
            finished: Family::default(),
            retries: Family::default(),
            dead_letters: Family::default(),
            queue_depth: Family::default(),
            rejected: Counter::default(),
            queue_wait: Histogram::new(exponential_buckets(0.000_1, 4.0, 12)),
        };
        metrics.with_registry(|r| {
            r.register("scheduler_submitted", "Tasks accepted, by agent", m.submitted.clone());
            r.register("scheduler_finished", "Tasks in a final state, by agent and status", m.finished.clone());
            r.register("scheduler_retries", "Retries scheduled for transient failures, by agent", m.retries.clone());
            r.register(
                "scheduler_dead_letters",
                "Tasks dead-lettered after their last attempt",
                m.dead_letters.clone(),
            );
            r.register("scheduler_queue_depth", "Tasks queued, by priority", m.queue_depth.clone());
            r.register("scheduler_rejected", "Submissions refused because the queue was full", m.rejected.clone());
            r.register("scheduler_queue_wait_seconds", "Time from queueing to start", m.queue_wait.clone());
        });
        m
    }

    pub fn submitted(&self, agent: &str) {
        self.submitted.get_or_create(&AgentLabel { agent: agent.into() }).inc();
    }

    pub fn retried(&self, agent: &str) {
        self.retries.get_or_create(&AgentLabel { agent: agent.into() }).inc();
    }

    pub fn finished(&self, agent: &str, status: TaskStatus) {
        self.finished.get_or_create(&FinalLabels { agent: agent.into(), status: status.name().into() }).inc();
        if status == TaskStatus::DeadLettered {
            self.dead_letters.get_or_create(&AgentLabel { agent: agent.into() }).inc();
        }
    }

    /// The depth of each priority level (critical first), as Redis counts
    /// them over the whole shared queue.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn set_depths(&self, depths: &[u64]) {
        for (p, depth) in Priority::ALL.into_iter().zip(depths) {
            self.queue_depth.get_or_create(&PriorityLabel { priority: p.name().into() }).set(*depth as i64);
        }
    }

    pub fn set_queue_depth(&self, queue: &ReadyQueue) {
        for p in Priority::ALL {
            self.queue_depth.get_or_create(&PriorityLabel { priority: p.name().into() }).set(queue.len_at(p) as i64);
        }
    }
}

/// Queue-wide gauges of a queue shared over Redis (each node exports them).
#[cfg(feature = "redis")]
pub(crate) struct ClusterMetrics {
    delayed: Gauge,
    running: Gauge,
    nodes: Gauge,
    held: Gauge,
}

#[cfg(feature = "redis")]
impl ClusterMetrics {
    pub fn register(metrics: &Metrics) -> ClusterMetrics {
        let m = ClusterMetrics {
            delayed: Gauge::default(),
            running: Gauge::default(),
            nodes: Gauge::default(),
            held: Gauge::default(),
        };
        metrics.with_registry(|r| {
            r.register("scheduler_cluster_delayed", "Tasks waiting out a retry delay, queue-wide", m.delayed.clone());
            r.register("scheduler_cluster_running", "Tasks held by nodes, queue-wide", m.running.clone());
            r.register("scheduler_cluster_nodes", "Nodes that renewed their leases lately", m.nodes.clone());
            r.register("scheduler_node_held", "Tasks this node holds (taken or running)", m.held.clone());
        });
        m
    }

    pub fn set(&self, delayed: u64, running: u64, nodes: u64, held: usize) {
        self.held.set(held as i64);
        self.delayed.set(delayed as i64);
        self.running.set(running as i64);
        self.nodes.set(nodes as i64);
    }
}
