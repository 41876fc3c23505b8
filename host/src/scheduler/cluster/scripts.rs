//! The queue's Lua scripts. Each state change of a task is one script, so
//! it is atomic across every node sharing the Redis server. Task states are
//! JSON edited in Rust; the scripts check a version (`v`) and the node
//! holding the task (`node`) before they write, so a stale or cut-off node
//! never overwrites a newer state.
//!
//! Keys, all under `{key_prefix}sched:` (`P` below):
//! - `t:{id}`: a hash — `state` (JSON), `input`, `output`, `status`,
//!   `agent`, `prio` (0 critical … 4 background), `v`, `node` (set while a
//!   node holds the task), `cancel` (a cancellation for that node), `qe`
//!   (its entry in a ready list while queued).
//! - `l:{id}`: a list of the task's attempt logs (JSON).
//! - `q:{prio}:{agent}`: the agent's ready list at that priority, entries
//!   `{queued ms}|{id}`, oldest first.
//! - `turn:{prio}`: the agents with a non-empty ready list at that
//!   priority, in turn order.
//! - `ready`: how many entries the ready lists hold together (kept by the
//!   scripts that push and pop them, and recounted by the housekeeping).
//! - `running`: a hash agent → tasks held by nodes (the global cap).
//! - `leases`: a sorted set id → lease expiry (ms).
//! - `delayed`: a sorted set id → when its retry is due (ms).
//! - `all`: a sorted set of every kept task id, score 0 (ids are UUIDv7:
//!   their byte order is their submission order).
//! - `done`: a sorted set finished id → finish time (retention).
//! - `idem:{key}`: `{id}|{digest}`, with the key's time to live.
//! - `agents`: a hash agent → `{component digest}|{node}` (who registered it).
//! - `nodes`: a sorted set node → last heartbeat (ms).
//! - `wake` (a channel): an agent's name, published when one of its ready
//!   lists stops being empty; idle nodes subscribe to it.
//!
//! Keys are built in the scripts from the prefix: the queue runs on one
//! Redis server (or a primary with replicas), not on Redis Cluster.

use redis::Script;
use std::sync::LazyLock;

/// Helpers every script starts with. ARGV[1] is always the key prefix.
const COMMON: &str = r#"
local P = ARGV[1]
local function tkey(id) return P .. 't:' .. id end
local function enqueue(id, lvl, agent, now)
  local q = P .. 'q:' .. lvl .. ':' .. agent
  local e = now .. '|' .. id
  if redis.call('LLEN', q) == 0 then
    redis.call('RPUSH', P .. 'turn:' .. lvl, agent)
    -- Idle nodes wait on this channel; busy ones look again by themselves.
    redis.call('PUBLISH', P .. 'wake', agent)
  end
  redis.call('RPUSH', q, e)
  redis.call('INCR', P .. 'ready')
  redis.call('HSET', tkey(id), 'qe', e)
end
local function dequeue(id)
  local t = tkey(id)
  redis.call('ZREM', P .. 'delayed', id)
  local f = redis.call('HMGET', t, 'qe', 'prio', 'agent')
  if not f[1] then return end
  local q = P .. 'q:' .. f[2] .. ':' .. f[3]
  if redis.call('LREM', q, 1, f[1]) == 1 then redis.call('DECR', P .. 'ready') end
  if redis.call('LLEN', q) == 0 then redis.call('LREM', P .. 'turn:' .. f[2], 1, f[3]) end
  redis.call('HDEL', t, 'qe')
end
local function depth(lvl)
  local n = 0
  for _, agent in ipairs(redis.call('LRANGE', P .. 'turn:' .. lvl, 0, -1)) do
    n = n + redis.call('LLEN', P .. 'q:' .. lvl .. ':' .. agent)
  end
  return n
end
local function release(id, agent)
  if redis.call('HINCRBY', P .. 'running', agent, -1) <= 0 then redis.call('HDEL', P .. 'running', agent) end
  redis.call('ZREM', P .. 'leases', id)
  redis.call('HDEL', tkey(id), 'node', 'cancel')
end
"#;

/// Accepts a task. ARGV: prefix, id, now, max_queued, state, input, agent,
/// prio, idempotency key ('' for none), `{id}|{digest}`, key ttl (ms).
/// Returns {'ok'}, {'full'} (the queue holds max_queued waiting tasks) or
/// {'seen', `{id}|{digest}`} (the key names a task already).
const SUBMIT: &str = r#"
local id, now = ARGV[2], ARGV[3]
if ARGV[9] ~= '' then
  local seen = redis.call('GET', P .. 'idem:' .. ARGV[9])
  if seen then return {'seen', seen} end
end
local waiting = redis.call('ZCARD', P .. 'delayed') + tonumber(redis.call('GET', P .. 'ready') or '0')
if waiting >= tonumber(ARGV[4]) then return {'full'} end
redis.call('HSET', tkey(id), 'state', ARGV[5], 'input', ARGV[6], 'status', 'pending',
  'agent', ARGV[7], 'prio', ARGV[8], 'v', 1)
enqueue(id, ARGV[8], ARGV[7], now)
redis.call('ZADD', P .. 'all', 0, id)
if ARGV[9] ~= '' then redis.call('SET', P .. 'idem:' .. ARGV[9], ARGV[10], 'PX', ARGV[11]) end
return {'ok'}
"#;

/// Takes the next task for this node: the ready queue's rule (lowest of
/// priority level minus levels gained by waiting, one per `aging` ms; ties
/// to the higher level; agents in turn within a level) over the agents this
/// node may start now, each under its global cap. ARGV: prefix, node, now,
/// aging (ms), lease (ms), then agent, cap pairs. Returns {id, v, state,
/// input, queued ms} or false.
const CLAIM: &str = r#"
local node, now, aging, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local caps = {}
for i = 6, #ARGV, 2 do caps[ARGV[i]] = tonumber(ARGV[i + 1]) end
for _ = 1, 16 do
  local best = nil
  for lvl = 0, 4 do
    for _, agent in ipairs(redis.call('LRANGE', P .. 'turn:' .. lvl, 0, -1)) do
      local cap = caps[agent]
      if cap and tonumber(redis.call('HGET', P .. 'running', agent) or '0') < cap then
        local head = redis.call('LINDEX', P .. 'q:' .. lvl .. ':' .. agent, 0)
        local queued = tonumber(string.match(head, '^(%d+)|'))
        local score = lvl - math.floor((now - queued) / aging)
        if not best or score < best[1] then best = {score, lvl, agent} end
        break
      end
    end
  end
  if not best then return false end
  local lvl, agent = best[2], best[3]
  local q, turn = P .. 'q:' .. lvl .. ':' .. agent, P .. 'turn:' .. lvl
  redis.call('LREM', turn, 1, agent)
  local e = redis.call('LPOP', q)
  redis.call('DECR', P .. 'ready')
  if redis.call('LLEN', q) > 0 then redis.call('RPUSH', turn, agent) end
  local queued, id = string.match(e, '^(%d+)|(.+)$')
  local t = tkey(id)
  redis.call('HDEL', t, 'qe')
  local f = redis.call('HMGET', t, 'status', 'node', 'state', 'input')
  if f[1] == 'pending' and not f[2] then
    redis.call('HINCRBY', P .. 'running', agent, 1)
    local v = redis.call('HINCRBY', t, 'v', 1)
    redis.call('HSET', t, 'node', node)
    redis.call('ZADD', P .. 'leases', now + lease, id)
    return {id, v, f[3], f[4], queued}
  end
end
return false
"#;

/// Writes a task's new state. ARGV: prefix, id, node, expected v, op, now,
/// state, status, output, has output ('1'/'0'), logs ('' for none), when.
/// Ops: `start` (the node holds it), `final` and `retry` and `requeue`
/// (the node lets it go: to the done set at `when`, to the delayed set due
/// at `when`, or back to its ready list), `cancel` (no node holds it: out
/// of its ready list or the delayed set, to the done set at `when`).
/// Returns {1, new v, cancel flag} or {0, 'gone' | 'stale' | 'lost'}.
const PUT: &str = r#"
local id, node, op = ARGV[2], ARGV[3], ARGV[5]
local t = tkey(id)
local f = redis.call('HMGET', t, 'node', 'v', 'status', 'agent', 'prio', 'cancel')
if not f[2] then return {0, 'gone'} end
if f[2] ~= ARGV[4] then return {0, 'stale'} end
if op == 'cancel' then
  if f[1] or f[3] ~= 'pending' then return {0, 'stale'} end
  dequeue(id)
else
  if f[1] ~= node then return {0, 'lost'} end
  if op ~= 'start' then release(id, f[4]) end
end
local v = redis.call('HINCRBY', t, 'v', 1)
redis.call('HSET', t, 'state', ARGV[7], 'status', ARGV[8])
if ARGV[10] == '1' then redis.call('HSET', t, 'output', ARGV[9]) end
if ARGV[11] ~= '' then redis.call('RPUSH', P .. 'l:' .. id, ARGV[11]) end
if op == 'retry' then
  redis.call('ZADD', P .. 'delayed', ARGV[12], id)
elseif op == 'requeue' then
  enqueue(id, f[5], f[4], ARGV[6])
elseif op == 'final' or op == 'cancel' then
  redis.call('ZADD', P .. 'done', ARGV[12], id)
end
if op ~= 'start' then f[6] = false end
return {1, v, f[6] or ''}
"#;

/// Asks for a task's cancellation. ARGV: prefix, id. Returns 'gone',
/// 'flagged' (a node holds it: that node stops it) or its status (a
/// pending one is cancelled by a `cancel` PUT).
const CANCEL: &str = r#"
local t = tkey(ARGV[2])
local f = redis.call('HMGET', t, 'node', 'status')
if not f[2] then return 'gone' end
if f[1] then
  redis.call('HSET', t, 'cancel', '1')
  return 'flagged'
end
return f[2]
"#;

/// Extends this node's leases. ARGV: prefix, node, now, lease (ms), ids.
/// Returns the ids to stop: `c{id}` cancelled, `l{id}` no longer this node's.
const HEARTBEAT: &str = r#"
local node, now, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZADD', P .. 'nodes', now, node)
local out = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local f = redis.call('HMGET', tkey(id), 'node', 'cancel')
  if f[1] == node then
    redis.call('ZADD', P .. 'leases', 'XX', now + lease, id)
    if f[2] then out[#out + 1] = 'c' .. id end
  else
    out[#out + 1] = 'l' .. id
  end
end
return out
"#;

/// Housekeeping any node does: retries that are due go back to their ready
/// lists; tasks whose lease ran out (their node died or lost Redis) are
/// taken over by this node, to put back; the queue-wide gauges. ARGV:
/// prefix, node, now, lease (ms), batch, node ttl (ms). Returns {{depth per
/// priority}, delayed, running, nodes, {id, v, state, cancel, ...}}.
const MAINTAIN: &str = r#"
local node, now, lease, batch = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', now, 'LIMIT', 0, batch)) do
  redis.call('ZREM', P .. 'delayed', id)
  local f = redis.call('HMGET', tkey(id), 'status', 'prio', 'agent', 'node')
  if f[1] == 'pending' and not f[4] then enqueue(id, f[2], f[3], ARGV[3]) end
end
local reaped = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0, batch)) do
  local t = tkey(id)
  if redis.call('EXISTS', t) == 1 then
    redis.call('ZADD', P .. 'leases', now + lease, id)
    redis.call('HSET', t, 'node', node)
    local v = redis.call('HINCRBY', t, 'v', 1)
    local f = redis.call('HMGET', t, 'state', 'cancel')
    reaped[#reaped + 1] = id
    reaped[#reaped + 1] = v
    reaped[#reaped + 1] = f[1]
    reaped[#reaped + 1] = f[2] or ''
  else
    redis.call('ZREM', P .. 'leases', id)
  end
end
local depths, ready = {}, 0
for lvl = 0, 4 do
  depths[lvl + 1] = depth(lvl)
  ready = ready + depths[lvl + 1]
end
redis.call('SET', P .. 'ready', ready)
local running = 0
for _, n in ipairs(redis.call('HVALS', P .. 'running')) do running = running + tonumber(n) end
redis.call('ZREMRANGEBYSCORE', P .. 'nodes', '-inf', now - tonumber(ARGV[6]))
return {depths, redis.call('ZCARD', P .. 'delayed'), running, redis.call('ZCARD', P .. 'nodes'), reaped}
"#;

/// Deletes finished tasks past retention. ARGV: prefix, finished before
/// (ms), most kept, batch. Returns how many were deleted.
const TRIM: &str = r#"
local n, batch = 0, tonumber(ARGV[4])
local function drop(id)
  redis.call('DEL', tkey(id), P .. 'l:' .. id)
  redis.call('ZREM', P .. 'done', id)
  redis.call('ZREM', P .. 'all', id)
  n = n + 1
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'done', '-inf', ARGV[2], 'LIMIT', 0, batch)) do drop(id) end
local excess = redis.call('ZCARD', P .. 'done') - tonumber(ARGV[3])
if excess > 0 then
  for _, id in ipairs(redis.call('ZRANGE', P .. 'done', 0, math.min(excess, batch) - 1)) do drop(id) end
end
return n
"#;

/// Registers an agent's component for the cluster (the first node to
/// register a name sets its digest). ARGV: prefix, name, `{digest}|{node}`.
/// Returns the registered `{digest}|{node}`.
const REGISTER: &str = r#"
redis.call('HSETNX', P .. 'agents', ARGV[2], ARGV[3])
return redis.call('HGET', P .. 'agents', ARGV[2])
"#;

pub(super) struct Scripts {
    pub submit: Script,
    pub claim: Script,
    pub put: Script,
    pub cancel: Script,
    pub heartbeat: Script,
    pub maintain: Script,
    pub trim: Script,
    pub register: Script,
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let script = |body: &str| Script::new(&format!("{COMMON}{body}"));
    Scripts {
        submit: script(SUBMIT),
        claim: script(CLAIM),
        put: script(PUT),
        cancel: script(CANCEL),
        heartbeat: script(HEARTBEAT),
        maintain: script(MAINTAIN),
        trim: script(TRIM),
        register: script(REGISTER),
    }
});
