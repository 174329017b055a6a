//! The store operations Redis runs as Lua scripts (compare-and-delete, compare-and-set, the
//! fixed-window counter, the session indexes). A script runs atomically, so two replicas never
//! see half an operation (a counter without its expiry, a session replaced after another
//! replica's write).
//!
//! An index is a sorted set of members scored by the time each one expires (Redis's own
//! clock, so replicas' clocks never disagree about it), at `by-expiry:<index>`: each addition
//! drops the members whose time is over, so an index holds the sessions that may still live,
//! however many logins a user makes while it stays alive. Before that an index was a plain set
//! at `<index>` that only grew until its TTL. That set is still written (and pruned with the
//! index), read and cleaned, so that no logout misses a session while both builds run: during
//! an upgrade, after a rollback, and for the sessions the earlier build wrote. Both keys carry
//! the index's hash tag: one Cluster slot, one script.

use super::{millis, RedisStore, StoreError};
use std::time::Duration;

/// The scripts, run by hash (`EVALSHA`; the crate loads one Redis does not know yet).
pub(super) struct Scripts {
    index_add: redis::Script,
    index_members: redis::Script,
    index_remove: redis::Script,
    delete_if: redis::Script,
    replace_if: redis::Script,
    count: redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            index_add: redis::Script::new(INDEX_ADD),
            index_members: redis::Script::new(INDEX_MEMBERS),
            index_remove: redis::Script::new(INDEX_REMOVE),
            delete_if: redis::Script::new(DELETE_IF),
            replace_if: redis::Script::new(REPLACE_IF),
            count: redis::Script::new(COUNT),
        }
    }
}

/// Adds ARGV[1] to the index KEYS[1], to expire in ARGV[2] ms, after dropping the members
/// whose time is over; raises the index's TTL to at least ARGV[2] ms (never lowers it). The
/// same member goes into the older plain set KEYS[2] too, and leaves it when it leaves the
/// index: replicas of the earlier build, during an upgrade or after a rollback, read only that
/// set, and it stays as small as the index. `replicate_commands`: Redis 6 replicates a script
/// that reads the clock by its effects only when asked (Redis 7 always does). Scores are
/// written as integers, never in `%.14g`.
const INDEX_ADD: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local over = string.format('%.0f', now)
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', over)) do
  redis.call('SREM', KEYS[2], m)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', over)
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
for _, k in ipairs(KEYS) do
  if redis.call('PTTL', k) < tonumber(ARGV[2]) then redis.call('PEXPIRE', k, ARGV[2]) end
end
return 1";

/// The members of the index KEYS[1] and of its older plain set KEYS[2], each once.
const INDEX_MEMBERS: &str = r"
local m = redis.call('ZRANGE', KEYS[1], 0, -1)
local seen = {}
for _, x in ipairs(m) do seen[x] = true end
for _, x in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if not seen[x] then m[#m + 1] = x end
end
return m";

/// Removes ARGV[1] from the index KEYS[1] and from its older plain set KEYS[2].
const INDEX_REMOVE: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1";

/// Deletes KEYS[1] only if it still holds ARGV[1] (a lock released by its owner only).
const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// Sets KEYS[1] to ARGV[2] with a TTL of ARGV[3] ms only if it still holds ARGV[1] (a session
/// changed by one request while nobody else wrote it).
const REPLACE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

/// A fixed-window counter: INCR KEYS[1] when ARGV[2] is 1 (its window, ARGV[1] ms, starts at
/// the first hit), else read it; returns {count, ms left}. One script, so two replicas never
/// see a counter without its expiry.
const COUNT: &str = r"
local n
if ARGV[2] == '1' then
  n = redis.call('INCR', KEYS[1])
else
  n = tonumber(redis.call('GET', KEYS[1]) or '0')
end
local ttl = redis.call('PTTL', KEYS[1])
if n > 0 and ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
if ttl < 0 then ttl = 0 end
return {n, ttl}";

impl RedisStore {
    /// Deletes `key` only if it still holds `value` (a lock released by its owner only).
    pub async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        self.write_if(key, &self.scripts.delete_if, |inv| {
            inv.arg(value);
        })
        .await
    }

    /// Sets `key` to `value` for `ttl` only if it still holds `expected`.
    pub async fn replace_if(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.write_if(key, &self.scripts.replace_if, |inv| {
            inv.arg(expected).arg(value).arg(millis(ttl));
        })
        .await
    }

    /// Runs `script` on `key` with the arguments `args` adds (a conditional write answering 1
    /// when it wrote), then lets this process's caches see the write (`written`) whatever the
    /// answer.
    async fn write_if(
        &self,
        key: &str,
        script: &redis::Script,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<bool, StoreError> {
        let full = self.key(key);
        let mut inv = script.key(&full);
        args(&mut inv);
        let n: Result<i64, _> = self.invoke(&inv).await;
        self.written(key).await;
        Ok(n? > 0)
    }

    /// Counts a hit in `key`'s fixed window (or only reads it): the count and the time left.
    pub async fn count(
        &self,
        key: &str,
        window: Duration,
        hit: bool,
    ) -> Result<(u64, Duration), StoreError> {
        let full = self.key(key);
        let mut inv = self.scripts.count.key(&full);
        let (n, ms): (u64, u64) = self
            .invoke(inv.arg(millis(window)).arg(if hit { "1" } else { "0" }))
            .await?;
        Ok((n, Duration::from_millis(ms)))
    }

    /// Adds `member` to `index` for `ttl`, dropping the members whose time is over; the
    /// index lives at least `ttl`.
    pub async fn index_add(
        &self,
        index: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let (key, older) = self.index_keys(index);
        let mut inv = self.scripts.index_add.key(&key);
        let _: i64 = self
            .invoke(inv.key(&older).arg(member).arg(millis(ttl)))
            .await?;
        Ok(())
    }

    pub async fn index_oldest_first(&self, index: &str) -> Result<Vec<String>, StoreError> {
        let (key, _) = self.index_keys(index);
        self.query(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1))
            .await
    }

    pub async fn index_members(&self, index: &str) -> Result<Vec<String>, StoreError> {
        let (key, older) = self.index_keys(index);
        let mut inv = self.scripts.index_members.key(&key);
        self.invoke(inv.key(&older)).await
    }

    pub async fn index_remove(&self, index: &str, member: &str) -> Result<(), StoreError> {
        let (key, older) = self.index_keys(index);
        let mut inv = self.scripts.index_remove.key(&key);
        let _: i64 = self.invoke(inv.key(&older).arg(member)).await?;
        Ok(())
    }

    /// The keys of `index`: its sorted set, `by-expiry:<index>` (the index's shape and hash
    /// tag after a prefix of its own), and the plain set earlier builds used (see the module's
    /// doc).
    fn index_keys(&self, index: &str) -> (String, String) {
        (self.key(&format!("by-expiry:{index}")), self.key(index))
    }
}
