//! What Redis does when it is full, read once it answers: a server that evicts keys to make room
//! may evict a logout index (written at login, never read until the logout), and the IdP's
//! logout then finds nothing to end and answers 200. Only `noeviction` (a full server refuses
//! writes, which the sidecar reports) keeps every logout. Reads `INFO memory`; warns, since a
//! managed Redis may not let the operator change it at once. Knows nothing of sessions.

use super::RedisStore;
use crate::store::StoreError;

/// One server's `maxmemory` and `maxmemory-policy`, as `INFO memory` says them.
#[derive(Debug, PartialEq)]
pub struct Eviction {
    pub maxmemory: u64,
    pub policy: String,
}

impl Eviction {
    /// The warning this server deserves, if any: it has a memory limit and evicts at it.
    pub fn warning(&self) -> Option<String> {
        (self.maxmemory > 0 && self.policy != "noeviction").then(|| {
            format!(
                "Redis evicts keys when full (maxmemory {} bytes, maxmemory-policy {}): it may \
                 evict the index a back-channel logout reads, and the IdP's logout then ends \
                 nothing (answered 200). Set maxmemory-policy noeviction (a full Redis then \
                 refuses new logins and refreshes, which the sidecar reports), or maxmemory 0",
                self.maxmemory, self.policy
            )
        })
    }
}

/// Every server's settings found in an `INFO memory` answer (a Cluster answers for each node).
pub fn parse(info: &redis::Value) -> Vec<Eviction> {
    let mut texts = Vec::new();
    collect(info, &mut texts);
    texts
        .iter()
        .filter_map(|t| {
            let field = |name: &str| {
                t.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
            };
            Some(Eviction {
                maxmemory: field("maxmemory")?.parse().ok()?,
                policy: field("maxmemory_policy")?.to_owned(),
            })
        })
        .collect()
}

fn collect<'a>(v: &'a redis::Value, out: &mut Vec<std::borrow::Cow<'a, str>>) {
    use redis::Value;
    match v {
        Value::BulkString(b) => out.push(String::from_utf8_lossy(b)),
        Value::SimpleString(s) => out.push(std::borrow::Cow::Borrowed(s)),
        Value::VerbatimString { text, .. } => out.push(std::borrow::Cow::Borrowed(text)),
        Value::Array(a) | Value::Set(a) => a.iter().for_each(|v| collect(v, out)),
        Value::Map(m) => m.iter().for_each(|(_, v)| collect(v, out)),
        _ => {}
    }
}

impl RedisStore {
    /// The servers' eviction settings (`INFO memory`).
    pub async fn eviction(&self) -> Result<Vec<Eviction>, StoreError> {
        let info: redis::Value = self.query(redis::cmd("INFO").arg("memory")).await?;
        Ok(parse(&info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn info(maxmemory: &str, policy: &str) -> Value {
        Value::BulkString(
            format!(
                "# Memory\r\nused_memory:1000\r\nmaxmemory:{maxmemory}\r\nmaxmemory_human:2M\r\n\
                 maxmemory_policy:{policy}\r\n"
            )
            .into_bytes(),
        )
    }

    #[test]
    fn only_a_limited_server_that_evicts_is_warned_about() {
        let one = |m, p| parse(&info(m, p)).remove(0);
        assert!(one("2097152", "allkeys-lru").warning().is_some());
        assert!(one("2097152", "volatile-lru").warning().is_some());
        assert!(one("2097152", "noeviction").warning().is_none());
        assert!(one("0", "allkeys-lru").warning().is_none(), "no limit");
        let w = one("2097152", "volatile-ttl").warning().unwrap();
        assert!(
            w.contains("volatile-ttl") && w.contains("noeviction"),
            "{w}"
        );
    }

    #[test]
    fn a_clusters_answer_is_read_node_by_node() {
        let cluster = Value::Map(vec![
            (
                Value::SimpleString("a:7000".into()),
                info("0", "noeviction"),
            ),
            (
                Value::SimpleString("b:7001".into()),
                info("1048576", "allkeys-lfu"),
            ),
        ]);
        let servers = parse(&cluster);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers.iter().filter_map(Eviction::warning).count(), 1);
        assert!(parse(&Value::Nil).is_empty());
    }
}
