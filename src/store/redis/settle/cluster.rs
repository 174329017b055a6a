//! A settle round on a Redis Cluster. A revocation's keys live on the masters that own their
//! slots, so the round asks every master: it reads them from `CLUSTER SLOTS`, and on each one
//! writes a key of its own, in a slot that master owns, then `WAIT`s, in one pipeline, which the
//! cluster client sends to that key's master. The masters are asked at once, and the round
//! counts the fewest replicas any of them had. The topology is read afresh each round: a
//! failover or a resharding between two rounds is the next one's to see. Knows nothing of
//! sessions.

use super::Settle;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{ErrorKind, RedisError, RedisResult, Value};
use std::collections::HashMap;

/// Hash tags tried for one slot: about 16,384 are needed on average, and a slot none of these
/// reach does not exist.
const TAG_TRIES: u32 = 1 << 22;

/// Waits on every master: the fewest replicas any of them acknowledged.
pub(super) async fn on_every_master(
    settle: &Settle,
    conn: &mut ClusterConnection,
    tags: &mut HashMap<u16, String>,
) -> RedisResult<u32> {
    let slots = conn
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let masters = first_slots(&slots)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| unexpected("CLUSTER SLOTS named no master"))?;
    let mut asks = tokio::task::JoinSet::new();
    for slot in masters {
        let tag = match tags.get(&slot) {
            Some(t) => t.clone(),
            None => {
                let t = tag_for(slot).ok_or_else(|| unexpected("a slot out of range"))?;
                tags.insert(slot, t.clone());
                t
            }
        };
        // The prefix has no brace (the settings refuse one), so the tag decides the slot.
        let key = format!("{}:{{{tag}}}", settle.key);
        let mut conn = conn.clone();
        let (replicas, wait) = (settle.replicas, settle.wait);
        asks.spawn(async move { super::set_then_wait(&mut conn, &key, replicas, wait).await });
    }
    let mut fewest = u32::MAX;
    while let Some(done) = asks.join_next().await {
        let acked = done.map_err(|_| unexpected("a master's wait stopped"))??;
        fewest = fewest.min(acked);
    }
    Ok(fewest)
}

/// The first slot of each master in a `CLUSTER SLOTS` answer (its ranges are
/// `[start, end, [host, port, id…], replicas…]`); `None` if it is not one. Masters are told
/// apart by their node id: their endpoint may be `?` or a name they share.
fn first_slots(answer: &Value) -> Option<Vec<u16>> {
    let Value::Array(ranges) = answer else {
        return None;
    };
    let mut first: HashMap<Vec<u8>, u16> = HashMap::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let (Some(Value::Int(start)), Some(Value::Array(master))) = (fields.first(), fields.get(2))
        else {
            return None;
        };
        let text = |v: Option<&Value>| match v {
            Some(Value::BulkString(b)) => Some(b.clone()),
            Some(Value::SimpleString(s)) => Some(s.clone().into_bytes()),
            _ => None,
        };
        // Before Redis 4 there was no id: the endpoint, then.
        let node = match (text(master.get(2)), text(master.first()), master.get(1)) {
            (Some(id), ..) => id,
            (None, Some(mut host), Some(Value::Int(port))) => {
                host.extend_from_slice(format!(":{port}").as_bytes());
                host
            }
            _ => return None,
        };
        let start = u16::try_from(*start).ok()?;
        let slot = first.entry(node).or_insert(start);
        *slot = (*slot).min(start);
    }
    Some(first.into_values().collect())
}

/// A hash tag whose keys land on `slot`.
fn tag_for(slot: u16) -> Option<String> {
    let target = Slot::new(slot)?;
    (0..TAG_TRIES)
        .map(|i| i.to_string())
        .find(|t| Slot::for_key(t) == target)
}

fn unexpected(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::UnexpectedReturnType, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_tag_and_each_master_its_first_slot() {
        for slot in [0, 1, 5460, 5461, 10922, 16383] {
            let tag = tag_for(slot).unwrap();
            let key = format!("sso-sidecar:settle:{{{tag}}}");
            assert_eq!(Slot::for_key(&key), Slot::new(slot).unwrap(), "{key}");
        }
        assert_eq!(tag_for(16384), None);

        let master = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.into()),
                Value::Int(port),
                Value::BulkString(format!("id-{port}").into_bytes()),
            ])
        };
        let range = |start, end, host, port| {
            Value::Array(vec![
                Value::Int(start),
                Value::Int(end),
                master(host, port),
                master("127.0.0.1", 9),
            ])
        };
        let answer = Value::Array(vec![
            range(5461, 10922, "127.0.0.1", 2),
            range(0, 99, "127.0.0.1", 1),
            range(10923, 16383, "127.0.0.1", 1),
            range(100, 5460, "127.0.0.1", 3),
        ]);
        let mut firsts = first_slots(&answer).unwrap();
        firsts.sort();
        assert_eq!(firsts, [0, 100, 5461]);
        // Two masters behind the same unknown endpoint are two masters.
        let unknown = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(8191),
                Value::Array(vec![
                    Value::BulkString(b"?".to_vec()),
                    Value::Int(6379),
                    Value::BulkString(b"a".to_vec()),
                ]),
            ]),
            Value::Array(vec![
                Value::Int(8192),
                Value::Int(16383),
                Value::Array(vec![
                    Value::BulkString(b"?".to_vec()),
                    Value::Int(6379),
                    Value::BulkString(b"b".to_vec()),
                ]),
            ]),
        ]);
        let mut firsts = first_slots(&unknown).unwrap();
        firsts.sort();
        assert_eq!(firsts, [0, 8192]);
        assert_eq!(first_slots(&Value::Array(vec![Value::Int(1)])), None);
        assert_eq!(first_slots(&Value::Okay), None);
    }
}
