//! Redis settings: the topology (one server, Sentinel, Cluster), credentials, TLS, timeouts,
//! the client-side cache and the wait for replicas after a logout, validated into a
//! [`RedisConfig`]. Checks values only; connects to nothing (the store does, `store::redis`).

use super::settings::Settings;
use crate::secret::Secret;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach Redis, validated.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub topology: RedisTopology,
    pub key_prefix: String,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<Secret<String>>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    /// Entries per worker of the client-side cache kept coherent by Redis (single server
    /// only); `None` when it is off.
    pub client_cache: Option<usize>,
    /// Replicas a revocation waits for, and how long at most (0: none).
    pub logout_replicas: u32,
    pub logout_wait: Duration,
}

#[derive(Clone)]
pub enum RedisTopology {
    Single {
        url: Secret<String>,
    },
    Sentinel {
        nodes: Vec<String>,
        master: String,
        tls: bool,
    },
    Cluster {
        nodes: Vec<String>,
    },
}

/// Node URLs may carry a password (`redis://:pw@host`): shown without their credentials.
impl std::fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |nodes: &[String]| -> Vec<String> {
            nodes
                .iter()
                .map(|n| match url::Url::parse(n) {
                    Ok(mut u) => {
                        if u.password().is_some() || !u.username().is_empty() {
                            let _ = u.set_password(None);
                            let _ = u.set_username("");
                        }
                        u.to_string()
                    }
                    Err(_) => "[not a URL]".to_owned(),
                })
                .collect()
        };
        match self {
            RedisTopology::Single { url } => f.debug_struct("Single").field("url", url).finish(),
            RedisTopology::Sentinel { nodes, master, tls } => f
                .debug_struct("Sentinel")
                .field("nodes", &shown(nodes))
                .field("master", master)
                .field("tls", tls)
                .finish(),
            RedisTopology::Cluster { nodes } => f
                .debug_struct("Cluster")
                .field("nodes", &shown(nodes))
                .finish(),
        }
    }
}

impl Settings {
    /// `None` inside: no Redis configured, sessions stay in memory.
    pub(super) fn validate_redis(
        &self,
        ca_file: Option<PathBuf>,
        problems: &mut Vec<String>,
    ) -> Option<Option<RedisConfig>> {
        let url = self
            .redis_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty());
        let scheme_ok = |u: &str| u.starts_with("redis://") || u.starts_with("rediss://");
        let nodes: Vec<String> = self.redis_nodes.0.clone();
        for n in &nodes {
            if !scheme_ok(n) {
                // Never echo it: a node URL may carry a password.
                problems
                    .push("redis_nodes entries must start with redis:// or rediss://".to_string());
                return None;
            }
        }
        // A setting for another topology is a mistake, never ignored: Redis nodes without
        // their mode would leave every replica with sessions of its own, in memory.
        match (self.redis_mode.trim(), url, nodes.is_empty()) {
            ("single", _, false) => {
                problems.push(
                    "redis_nodes is set but redis_mode is \"single\": set redis_mode to \"sentinel\" or \"cluster\" (or use redis_url for one server)"
                        .to_string(),
                );
                return None;
            }
            ("sentinel" | "cluster", Some(_), _) => {
                problems.push(format!(
                    "redis_url is set with redis_mode = \"{}\", which reads redis_nodes: remove one",
                    self.redis_mode.trim()
                ));
                return None;
            }
            _ => {}
        }
        // Set means set to something: an empty value (a compose file's `${X:-}`, an empty
        // secret file) is unset, as everywhere else here.
        let given = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
        let master = self.redis_sentinel_master.trim();
        let sentinel_set = [
            (
                "redis_sentinel_master",
                !master.is_empty() && master != "mymaster",
            ),
            ("redis_sentinel_tls", self.redis_sentinel_tls),
            (
                "redis_sentinel_username",
                given(&self.redis_sentinel_username),
            ),
            (
                "redis_sentinel_password",
                given(&self.redis_sentinel_password),
            ),
        ];
        if self.redis_mode.trim() != "sentinel" {
            if let Some((name, _)) = sentinel_set.iter().find(|(_, set)| *set) {
                problems.push(format!(
                    "{name} is set but redis_mode is \"{}\": set redis_mode = \"sentinel\" \
                     (with the sentinels in redis_nodes), or remove it",
                    self.redis_mode.trim()
                ));
                return None;
            }
        }
        if self.redis_key_prefix.contains(['{', '}']) {
            problems.push(
                "redis_key_prefix must not contain { or }: each key carries a hash tag of its own, \
                 which a brace in the prefix would change (in a Redis Cluster the keys a login \
                 writes together would land on different shards, and every login would fail)"
                    .to_string(),
            );
            return None;
        }
        // Checked with or without Redis, as every setting is (a Sentinel set-up exists to fail
        // over, so its logouts wait for a replica by default: below).
        let asked = self.redis_logout_replicas.trim();
        let asked = match asked {
            a if a.eq_ignore_ascii_case("auto") => None,
            n => match n.parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => {
                    problems.push(format!(
                        "redis_logout_replicas must be auto or a whole number, got '{n}'"
                    ));
                    return None;
                }
            },
        };
        let topology = match self.redis_mode.trim() {
            "single" => match url {
                None => return Some(None),
                Some(u) if scheme_ok(u) => RedisTopology::Single {
                    url: Secret::new(u.to_owned()),
                },
                Some(_) => {
                    problems.push("redis_url must start with redis:// or rediss://".to_string());
                    return None;
                }
            },
            "sentinel" | "cluster" if nodes.is_empty() => {
                problems.push(format!(
                    "redis_mode = \"{}\" needs redis_nodes",
                    self.redis_mode.trim()
                ));
                return None;
            }
            "sentinel" => {
                let master = self.redis_sentinel_master.trim();
                if master.is_empty() {
                    problems.push("redis_sentinel_master must not be empty".to_string());
                    return None;
                }
                RedisTopology::Sentinel {
                    nodes,
                    master: master.to_owned(),
                    tls: self.redis_sentinel_tls,
                }
            }
            "cluster" => RedisTopology::Cluster { nodes },
            other => {
                problems.push(format!(
                    "redis_mode must be single, sentinel or cluster, got '{other}'"
                ));
                return None;
            }
        };
        // A Cluster waits on each of its masters, if asked: by default none, as a Cluster
        // may have no replicas, and each revocation would then wait `logout_wait` for nothing.
        let logout_replicas = match (&topology, asked) {
            (_, Some(n)) => n,
            (RedisTopology::Sentinel { .. }, None) => 1,
            (_, None) => 0,
        };
        let secret = |v: &Option<String>| {
            v.as_deref()
                .filter(|p| !p.is_empty())
                .map(|p| Secret::new(p.to_owned()))
        };
        Some(Some(RedisConfig {
            topology,
            key_prefix: self.redis_key_prefix.clone(),
            username: self.redis_username.clone().filter(|u| !u.is_empty()),
            password: secret(&self.redis_password),
            sentinel_username: self
                .redis_sentinel_username
                .clone()
                .filter(|u| !u.is_empty()),
            sentinel_password: secret(&self.redis_sentinel_password),
            ca_file,
            timeout: Duration::from_millis(self.redis_timeout_ms),
            client_cache: (self.redis_client_cache && self.redis_client_cache_entries > 0)
                .then_some(self.redis_client_cache_entries),
            logout_replicas,
            logout_wait: Duration::from_millis(self.redis_logout_wait_ms),
        }))
    }
}
