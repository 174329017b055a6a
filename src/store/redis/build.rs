//! Building a [`RedisStore`] from settings: URLs and credentials, TLS with a private CA, the
//! three topologies, the per-worker connections and the client-side cache. Connects to nothing:
//! connections are made on first use.

use super::*;
use crate::per_worker::PerWorker;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::TlsMode;

impl RedisStore {
    /// The store described by validated settings.
    pub fn from_config(c: &crate::config::RedisConfig, connections: usize) -> Result<Self, String> {
        use crate::config::RedisTopology;
        let ca_pem = match &c.ca_file {
            Some(p) => Some(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?),
            None => None,
        };
        let topology = match &c.topology {
            RedisTopology::Single { url } => Topology::Single { url: url.expose() },
            RedisTopology::Sentinel { nodes, master, tls } => Topology::Sentinel {
                sentinels: nodes,
                master,
                tls: *tls,
            },
            RedisTopology::Cluster { nodes } => Topology::Cluster { nodes },
        };
        Self::new(RedisOptions {
            topology,
            key_prefix: &c.key_prefix,
            username: c.username.as_deref(),
            password: c.password.as_ref().map(|p| p.expose().as_str()),
            sentinel_username: c.sentinel_username.as_deref(),
            sentinel_password: c.sentinel_password.as_ref().map(|p| p.expose().as_str()),
            ca_pem,
            timeout: c.timeout,
            connections,
            client_cache: c.client_cache,
            logout_replicas: c.logout_replicas,
            logout_wait: c.logout_wait,
        })
    }

    pub fn new(opts: RedisOptions<'_>) -> Result<Self, String> {
        // The setting at fault and the client's reason when it is one of its fixed texts
        // ("Missing hostname - InvalidClientConfig"); a reason with details is not shown, as
        // they may quote the URL, which may hold a password.
        let setting = match opts.topology {
            Topology::Single { .. } => "redis_url",
            _ => "redis_nodes",
        };
        let bad = |e: redis::RedisError| match e.detail() {
            None => format!("{setting} is not usable: {e}"),
            Some(_) => format!("{setting} is not usable ({:?})", e.kind()),
        };
        let backend = match opts.topology {
            Topology::Single { url } => {
                let mut info: redis::ConnectionInfo =
                    redis::IntoConnectionInfo::into_connection_info(url).map_err(bad)?;
                info = with_credentials(info, opts.username, opts.password);
                info = info.set_tcp_settings(tcp_settings(opts.timeout));
                let open = |info: redis::ConnectionInfo| match opts.ca_pem.clone() {
                    Some(ca) => redis::Client::build_with_tls(
                        info,
                        redis::TlsCertificates {
                            client_tls: None,
                            root_cert: Some(ca),
                        },
                    ),
                    None => redis::Client::open(info),
                };
                let tracking = match opts.client_cache {
                    Some(entries) => {
                        // Invalidations are pushed on the reading connection: RESP3 only.
                        let resp3 = info
                            .redis_settings()
                            .clone()
                            .set_protocol(redis::ProtocolVersion::RESP3);
                        let client = open(info.clone().set_redis_settings(resp3)).map_err(bad)?;
                        Some(Tracking::new(
                            client,
                            opts.timeout,
                            entries,
                            opts.connections,
                        ))
                    }
                    None => None,
                };
                let client = open(info).map_err(bad)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(opts.timeout))
                    .set_response_timeout(Some(opts.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(2));
                Backend::Single {
                    client,
                    config,
                    conns: PerWorker::new(opts.connections, Default::default),
                    tracking,
                }
            }
            Topology::Cluster { nodes } => {
                let mut b = ClusterClient::builder(nodes.to_vec())
                    .connection_timeout(opts.timeout)
                    .response_timeout(opts.timeout)
                    .retries(2);
                if let Some(u) = opts.username {
                    b = b.username(u);
                }
                if let Some(p) = opts.password {
                    b = b.password(p);
                }
                if let Some(ca) = opts.ca_pem.clone() {
                    b = b.certs(redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(ca),
                    });
                }
                Backend::Cluster {
                    client: b.build().map_err(bad)?,
                    conn: OnceCell::new(),
                }
            }
            Topology::Sentinel {
                sentinels,
                master,
                tls,
            } => {
                // The sentinels share one set of credentials: the configured ones, else those
                // inline in their URLs, which must then be the same in every URL.
                let mut inline = None;
                let mut addresses = Vec::new();
                for s in sentinels {
                    let info: redis::ConnectionInfo =
                        redis::IntoConnectionInfo::into_connection_info(s.as_str()).map_err(bad)?;
                    let r = info.redis_settings();
                    let these = (
                        r.username().map(str::to_owned),
                        r.password().map(str::to_owned),
                    );
                    if inline.as_ref().is_some_and(|first| *first != these) {
                        return Err("the sentinels' URLs carry different credentials: give one \
                                    set in redis_sentinel_username and redis_sentinel_password"
                            .into());
                    }
                    inline = Some(these);
                    addresses.push(info.addr().clone());
                }
                let (inline_user, inline_pass) = inline.unwrap_or_default();
                let sentinel_user = opts.sentinel_username.map(str::to_owned).or(inline_user);
                let sentinel_pass = opts.sentinel_password.map(str::to_owned).or(inline_pass);
                let all_tls = addresses
                    .iter()
                    .all(|a| matches!(a, redis::ConnectionAddr::TcpTls { .. }));
                let private_ca = || redis::TlsCertificates {
                    client_tls: None,
                    root_cert: opts.ca_pem.clone(),
                };
                // A private CA (`redis_ca_file`) is trusted by the master's connections over TLS
                // and by the sentinels' when they are all `rediss://`.
                if opts.ca_pem.is_some() && !all_tls {
                    tracing::warn!(
                        "redis_ca_file is not used for the sentinels: not all their URLs are \
                         rediss://"
                    );
                }
                // Two clients alike: one for the requests' connection, one for the settle
                // connection, so that neither's asking the sentinels waits for the other's.
                let build = || -> Result<redis::sentinel::SentinelClient, String> {
                    let mut b = SentinelClientBuilder::new(
                        addresses.clone(),
                        master,
                        SentinelServerType::Master,
                    )
                    .map_err(bad)?
                    .set_client_to_redis_tcp_settings(tcp_settings(opts.timeout))
                    .set_client_to_sentinel_tcp_settings(tcp_settings(opts.timeout));
                    if let Some(u) = opts.username {
                        b = b.set_client_to_redis_username(u);
                    }
                    if let Some(p) = opts.password {
                        b = b.set_client_to_redis_password(p);
                    }
                    if let Some(u) = &sentinel_user {
                        b = b.set_client_to_sentinel_username(u);
                    }
                    if let Some(p) = &sentinel_pass {
                        b = b.set_client_to_sentinel_password(p);
                    }
                    if tls {
                        b = b.set_client_to_redis_tls_mode(TlsMode::Secure);
                    }
                    if opts.ca_pem.is_some() {
                        if tls {
                            b = b.set_client_to_redis_certificates(private_ca());
                        }
                        if all_tls {
                            b = b.set_client_to_sentinel_certificates(private_ca());
                        }
                    }
                    b.build().map_err(bad)
                };
                let client = build()?;
                let settle_client = build()?;
                Backend::Sentinel {
                    client: Mutex::new(client),
                    settle_client: Mutex::new(settle_client),
                    conn: Mutex::new(None),
                    timeout: opts.timeout,
                }
            }
        };
        Ok(RedisStore {
            backend,
            prefix: opts.key_prefix.to_owned(),
            scripts: scripts::Scripts::new(),
            connect_wait: opts.timeout * 2 + Duration::from_millis(100),
            settle: settle::Settle::new(
                opts.logout_replicas,
                opts.logout_wait,
                format!("{}settle", opts.key_prefix),
            ),
            timeout: opts.timeout,
        })
    }
}

/// The TCP options of the connections to a single Redis: no Nagle delay on the small writes
/// commands are; and a peer that vanished without a word (a node lost, a failover to another
/// address behind the same name) found out. Data unacknowledged for twice the command timeout,
/// or an idle connection whose keepalive probes go unanswered, closes the connection, which the
/// client then makes again; timeouts alone never would (they are not connection errors to it),
/// and every request would wait its timeout until the kernel gave up (~15 min).
fn tcp_settings(timeout: Duration) -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        // Not below Linux's minimum retransmission timeout: one lost segment is no lost peer.
        .set_user_timeout((timeout * 2).max(Duration::from_secs(1)))
        .set_keepalive(
            redis::io::tcp::socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(30))
                .with_interval(Duration::from_secs(5))
                .with_retries(3),
        )
}

fn with_credentials(
    mut info: redis::ConnectionInfo,
    user: Option<&str>,
    pass: Option<&str>,
) -> redis::ConnectionInfo {
    let mut r = info.redis_settings().clone();
    if let Some(u) = user {
        r = r.set_username(u);
    }
    if let Some(p) = pass {
        r = r.set_password(p);
    }
    info = info.set_redis_settings(r);
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options with nothing but `topology` set.
    fn options(topology: Topology<'_>) -> RedisOptions<'_> {
        RedisOptions {
            topology,
            key_prefix: "t:",
            username: None,
            password: None,
            sentinel_username: None,
            sentinel_password: None,
            ca_pem: None,
            timeout: Duration::from_millis(2000),
            connections: 1,
            client_cache: None,
            logout_replicas: 0,
            logout_wait: Duration::from_secs(1),
        }
    }

    #[test]
    fn connections_to_a_single_redis_notice_a_vanished_peer() {
        let url = "redis://127.0.0.1:6379";
        let store = RedisStore::new(options(Topology::Single { url })).unwrap();
        let Backend::Single { client, .. } = &store.backend else {
            panic!("a single server");
        };
        let t = client.get_connection_info().tcp_settings();
        assert!(t.nodelay());
        assert_eq!(t.user_timeout(), Some(Duration::from_secs(4)));
        assert!(t.keepalive().is_some());
    }

    /// A URL the client cannot use is refused naming the setting and the reason, and nothing
    /// of the URL (it may hold a password).
    #[test]
    fn an_unusable_url_names_its_setting_and_why() {
        for (url, why) in [
            ("redis://:hunter2@", "did not parse"),
            ("redis://:hunter2@h:6379/x", "Invalid database number"),
        ] {
            let e = RedisStore::new(options(Topology::Single { url }))
                .map(|_| ())
                .unwrap_err();
            assert!(e.starts_with("redis_url is not usable: "), "{e}");
            assert!(e.contains(why) && !e.contains("hunter2"), "{e}");
        }
        let nodes = vec!["redis://:hunter2@h:6379/x".to_owned()];
        let e = RedisStore::new(options(Topology::Cluster { nodes: &nodes }))
            .map(|_| ())
            .unwrap_err();
        assert!(e.starts_with("redis_nodes is not usable: "), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn sentinels_share_one_set_of_credentials() {
        let built = |urls: &[&str]| {
            let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
            RedisStore::new(options(Topology::Sentinel {
                sentinels: &urls,
                master: "mymaster",
                tls: false,
            }))
            .map(|_| ())
        };
        assert!(built(&["redis://:p1@10.0.0.1:26379", "redis://:p1@10.0.0.2:26379"]).is_ok());
        for differ in [
            [
                "redis://:p1@10.0.0.1:26379",
                "redis://:hunter2@10.0.0.2:26379",
            ],
            ["redis://:p1@10.0.0.1:26379", "redis://10.0.0.2:26379"],
        ] {
            let e = built(&differ).unwrap_err();
            assert!(e.contains("different credentials"), "{e}");
            assert!(!e.contains("hunter2") && !e.contains("p1"), "{e}");
        }
    }
}
