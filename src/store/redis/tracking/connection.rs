//! The tracked connection of one slot: opening it with `CLIENT TRACKING ON`, applying Redis's
//! invalidation pushes as they arrive (in order with the replies), and the health checks whose
//! answers prove the slot's entries current (`super`'s doc says why that proof is enough).
//! Must not serve reads: the cache itself is `super`'s.

use super::*;

/// Opens a slot's tracked connection, turns tracking on, then watches its health until it
/// fails. Runs on the runtime of the worker that needed it.
pub(super) async fn connect(slot: Arc<Slot>, client: redis::Client, timeout: Duration) {
    let id = {
        let mut st = slot.lock();
        st.next_id += 1;
        st.next_id
    };
    let events = slot.clone();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_push_sender(move |push: PushInfo| {
            events.on_push(id, &push);
            Ok::<(), std::convert::Infallible>(())
        });
    let sent = Instant::now();
    let opened = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(refusal)?;
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .query_async::<()>(&mut conn)
            .await
            .map_err(refusal)?;
        Ok::<_, Option<String>>(conn)
    };
    let opened = tokio::time::timeout(timeout, opened)
        .await
        .unwrap_or(Err(None));
    let conn = {
        let mut st = slot.lock();
        st.connecting = false;
        match opened {
            // Gone already (its Disconnection came first): as if it had failed.
            Ok(_) if st.dead == Some(id) => {
                st.retry_at = Some(tokio::time::Instant::now() + RETRY_AFTER);
                return;
            }
            Ok(conn) => {
                st.generation += 1;
                st.entries.clear();
                st.conn = Some((id, conn.clone()));
                st.verified_at = Some(sent);
                conn
            }
            Err(refused) => {
                st.retry_at = Some(tokio::time::Instant::now() + RETRY_AFTER);
                if let Some(why) = refused {
                    st.refused = true;
                    tracing::warn!(
                        error = why,
                        "no Redis client-side cache (RESP3 CLIENT TRACKING refused): sessions are read from Redis on every request"
                    );
                }
                return;
            }
        }
    };
    tracing::debug!("Redis client-side cache on for this worker");
    let mut conn = conn;
    loop {
        tokio::time::sleep(HEALTH_INTERVAL).await;
        if !slot.lock().is_current(id) {
            return;
        }
        let sent = Instant::now();
        let ping_cmd = redis::cmd("PING");
        let ping = ping_cmd.query_async::<String>(&mut conn);
        if matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_))) {
            slot.lock().verified(id, sent);
        } else {
            slot.lock().drop_conn(id);
            tracing::debug!("Redis client-side cache off for this worker: health check failed");
            return;
        }
    }
}

/// `Some(reason)` when an error means this server will never track for us (no RESP3: Redis
/// before 6; an ACL without `CLIENT`; an unknown command), `None` when trying again later may
/// work (connection refused, `LOADING`, `BUSY`…).
fn refusal(e: redis::RedisError) -> Option<String> {
    if e.kind() == redis::ErrorKind::RESP3NotSupported {
        return Some("RESP3 not supported".to_owned());
    }
    match e.code() {
        Some("BUSY" | "LOADING" | "TRYAGAIN" | "MASTERDOWN" | "NOAUTH" | "WRONGPASS") | None => {
            None
        }
        Some(code) => Some(code.to_owned()),
    }
}
