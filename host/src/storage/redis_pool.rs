//! Connections to one Redis server, shared by the KV store and the task
//! queue: a small pool of multiplexed connections made lazily and re-made
//! with backoff after Redis goes away, and a call that is sent once more
//! after a dropped connection only if it is safe to repeat.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::RedisSettings;

/// Whether a call may be sent twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idempotent {
    Yes,
    No,
}

/// A pool of connections to one Redis server.
pub(crate) struct RedisPool {
    client: redis::Client,
    timeout: Duration,
    pool: Vec<ConnectionManager>,
    next: AtomicUsize,
    server: String,
}

impl RedisPool {
    /// Sets up the connections to `settings.url` (made on first use; must
    /// be called inside a tokio runtime). Fails only on a malformed URL.
    pub fn open(settings: &RedisSettings) -> Result<RedisPool, String> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("Redis connections must be opened inside a tokio runtime".into());
        }
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| format!("redis_url is not a Redis URL ({e}): use redis://HOST:PORT/DB"))?;
        let server = describe(client.get_connection_info());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.response_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let pool = (0..settings.pool_size.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot set up the connections to Redis at {server}: {e}"))?;
        Ok(RedisPool { client, timeout: settings.response_timeout, pool, next: AtomicUsize::new(0), server })
    }

    /// The server, as errors name it: `host:port/db` (never a password).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The client the pool's connections come from, for a connection of
    /// another kind (a subscription).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// How long a call may wait for Redis to answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The next connection, round robin.
    pub fn connection(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        self.pool[i].clone()
    }

    /// Every connection.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionManager> + '_ {
        self.pool.iter().cloned()
    }

    /// Runs a command on `con`; once more if the connection had dropped and
    /// `again` says a repeat is safe. Writes are never repeated: one that
    /// reached Redis before the connection dropped would apply twice.
    pub async fn query_on<T: redis::FromRedisValue>(
        &self,
        con: ConnectionManager,
        cmd: &redis::Cmd,
        again: Idempotent,
    ) -> Result<T, redis::RedisError> {
        self.send(con, again, |mut con| async move { cmd.query_async(&mut con).await }).await
    }

    /// [`Self::query_on`] on the next connection.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        again: Idempotent,
    ) -> Result<T, redis::RedisError> {
        self.query_on(self.connection(), cmd, again).await
    }

    /// Runs a pipeline (its commands in one round trip), as [`Self::query`].
    pub async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        again: Idempotent,
    ) -> Result<T, redis::RedisError> {
        self.send(self.connection(), again, |mut con| async move { pipe.query_async(&mut con).await }).await
    }

    /// Runs a script, as [`Self::query`] runs a command.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
        again: Idempotent,
    ) -> Result<T, redis::RedisError> {
        self.send(self.connection(), again, |mut con| async move { call.invoke_async(&mut con).await }).await
    }

    /// Sends one call on `con`, and once more after a dropped connection
    /// when `again` allows (the failed call set the re-connection going;
    /// the second waits for it).
    async fn send<T, F, Fut>(&self, con: ConnectionManager, again: Idempotent, call: F) -> Result<T, redis::RedisError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, redis::RedisError>>,
    {
        match call(con.clone()).await {
            Err(e) if dropped(&e) => {
                self.heal();
                match again {
                    Idempotent::Yes => call(con).await,
                    Idempotent::No => Err(e),
                }
            }
            r => r,
        }
    }

    /// After one connection found Redis gone, pings every other: each
    /// that is stale starts re-connecting now, not at the next call it carries.
    fn heal(&self) {
        for con in &self.pool {
            let mut con = con.clone();
            tokio::spawn(async move {
                let _: Result<String, _> = redis::cmd("PING").query_async(&mut con).await;
            });
        }
    }
}

/// Whether `e` says the connection went away (not that Redis refused the command).
pub(crate) fn dropped(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

fn describe(info: &redis::ConnectionInfo) -> String {
    // The address and database only: the URL may carry a password.
    format!("{}/{}", info.addr(), info.redis_settings().db())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_named_without_its_password() {
        let client = redis::Client::open("redis://user:s3cret@127.0.0.1:6390/2").unwrap();
        let name = describe(client.get_connection_info());
        assert_eq!(name, "127.0.0.1:6390/2");
    }
}
