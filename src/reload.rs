//! Reloading the configuration while running: on SIGHUP, and, with `reload_watch_secs`, when
//! a file it was read from changes (the TOML file, the `.env` file, `authz.allowed_emails_file`,
//! the TLS certificate and key, which are read again at every reload)
//! — in a Kubernetes pod nothing sends a signal, and a ConfigMap mounted as files changes under
//! the process. What a reload may change, and what it refuses, is `config::reload`'s model;
//! this module only decides when, and hands the result to the workers. No request handling.

use crate::config::{self, Config};
use crate::{router, telemetry};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Reloads on SIGHUP and, every `reload_watch_secs` (0: never), when a watched file changed.
/// Each attempt is counted on `/metrics` by result: with the watch, reloads happen with nobody
/// looking, and a refusal is otherwise only a log line. `certificate`, the TLS listener's, is
/// read again at each reload, and its files are watched with the others (cert-manager renews
/// it in place).
pub async fn run(
    apps: Vec<Arc<router::App>>,
    oidc: Option<Arc<router::Oidc>>,
    certificate: Option<Arc<crate::tls::Certificate>>,
    current: Config,
    metrics: Arc<crate::metrics::Metrics>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(_) => {
            tracing::warn!("cannot listen for SIGHUP: reload on a signal disabled");
            None
        }
    };
    let mut current = current;
    let mut seen = fingerprint(&watched(&current));
    // A change seen at the last tick, reloaded once it has held for a whole tick: a writer
    // that writes a file in pieces is mostly done by then (a file renamed into place, as a
    // ConfigMap update does, is whole at once; README says to write files so).
    let mut changing: Option<Vec<Stamp>> = None;
    loop {
        let every = watch_interval(&current);
        let signalled = async {
            match hup.as_mut() {
                Some(h) => h.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        let ticked = async {
            match every {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = signalled => {
                if !received {
                    // No more signals (never seen in practice): the watch goes on.
                    hup = None;
                    continue;
                }
            }
            () = ticked => {
                if !settled(&seen, &mut changing, fingerprint(&watched(&current))) {
                    continue;
                }
                tracing::info!("a configuration file changed: reloading");
            }
        }
        // The files as they were before this reload read them: one that changes while it
        // reads (or after) differs from this at the next tick, and is read again. A refused
        // reload is not tried again until a file changes again (or a SIGHUP).
        let before = fingerprint(&watched(&current));
        if let Some(cert) = &certificate {
            match cert.reload() {
                Ok(true) => tracing::info!(
                    "the TLS certificate was read again: served from the next connection on"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the TLS certificate could not be read again: the one served so far is kept")
                }
            }
        }
        let applied = apply(&apps, oidc.as_deref(), &mut current);
        metrics.config_reload(if applied { "applied" } else { "refused" });
        seen = before;
        changing = None;
    }
}

/// Whether a tick that finds the files as `now` should reload: they differ from what was last
/// read (`seen`) and are the same as at the previous tick (`changing`, which this keeps).
fn settled(seen: &[Stamp], changing: &mut Option<Vec<Stamp>>, now: Vec<Stamp>) -> bool {
    if now == seen {
        *changing = None;
        return false;
    }
    if changing.as_ref() == Some(&now) {
        return true;
    }
    *changing = Some(now);
    false
}

/// `reload_watch_secs`, when set.
fn watch_interval(c: &Config) -> Option<Duration> {
    let secs = c.raw.0.reload_watch_secs;
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// The files a reload reads again.
fn watched(c: &Config) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = c.source_file.iter().chain(&c.env_file).cloned().collect();
    if let Some(f) = &c.raw.0.authz.allowed_emails_file {
        files.push(PathBuf::from(f));
    }
    if let Some(t) = &c.tls {
        files.extend([t.cert_file.clone(), t.key_file.clone()]);
    }
    files
}

/// One file's modification time, size and inode; `None` when it is gone.
type Stamp = Option<(std::time::SystemTime, u64, u64)>;

/// What the watched files look like now: each one's modification time, size and inode (a
/// ConfigMap update swaps a symlink to a new file; an editor may keep the time and change the
/// size), or nothing for a file that is gone.
fn fingerprint(files: &[PathBuf]) -> Vec<Stamp> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len(), m.ino()))
        })
        .collect()
}

/// Re-reads the configuration (same file, same environment). A valid change to the
/// reloadable settings — log level, path lists, identity header names, redirect allow-list,
/// upstream timeout — applies to the next request without dropping a connection; an invalid
/// configuration is refused with its problems logged and the running one kept, and so is one
/// that `config::reload_refusal` finds unsafe (the `.env` gone, an allow-list removed
/// entirely); settings that cannot change live are named, and so are the warnings the new
/// configuration earns (as at start-up). Whether it was applied.
fn apply(apps: &[Arc<router::App>], oidc: Option<&router::Oidc>, current: &mut Config) -> bool {
    let next = match config::load(config::Inputs::from_process(current.source_file.clone())) {
        Ok(next) => next,
        Err(e) => {
            tracing::error!(problems = ?e.0, "configuration reload refused; the running configuration is kept");
            return false;
        }
    };
    if let Some(why) = config::reload_refusal(current, &next) {
        tracing::error!(problem = %why, "configuration reload refused; the running configuration is kept");
        return false;
    }
    let restart = config::restart_required(current, &next);
    let reloadable = config::Reloadable::under(current, &next);
    for app in apps {
        app.reload(&reloadable);
    }
    if let Some(oidc) = oidc {
        oidc.reload(&reloadable);
    }
    match telemetry::set_level(&reloadable.log_level) {
        Err(e) => tracing::warn!(error = %e, "log level not changed"),
        Ok(false) if reloadable.log_level != current.log_level && telemetry::rust_log_decides() => {
            tracing::warn!("log_level not changed: RUST_LOG is set, and it decides")
        }
        Ok(_) => {}
    }
    // What start-up would have said of this configuration (public paths left at OpenRag's
    // list with identity headers, a rule another shadows…): a reload can bring those about.
    for w in new_warnings(current, &next) {
        tracing::warn!("{w}");
    }
    current.warnings.clone_from(&next.warnings);
    current.take_reloadable(&next);
    if restart.is_empty() {
        tracing::info!("configuration reloaded");
    } else {
        tracing::warn!(
            needs_restart = ?restart,
            "configuration reloaded; these settings cannot change while running and keep their old values until a restart"
        );
    }
    true
}

/// The warnings of `next` the running configuration did not have (those it has were said at
/// start-up or at an earlier reload).
fn new_warnings<'a>(current: &Config, next: &'a Config) -> Vec<&'a String> {
    next.warnings
        .iter()
        .filter(|w| !current.warnings.contains(w))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_reloaded_once_it_has_held_for_a_tick() {
        let at = |secs: u64, len: u64| -> Vec<Stamp> {
            let t = std::time::UNIX_EPOCH + Duration::from_secs(secs);
            vec![Some((t, len, 7))]
        };
        let seen = at(1, 10);
        let mut changing = None;
        assert!(!settled(&seen, &mut changing, at(1, 10)), "unchanged");
        assert!(!settled(&seen, &mut changing, at(2, 4)), "just changed");
        assert!(
            !settled(&seen, &mut changing, at(3, 8)),
            "still being written"
        );
        assert!(settled(&seen, &mut changing, at(3, 8)), "held for a tick");
        let mut changing = Some(at(2, 4));
        assert!(!settled(&seen, &mut changing, at(1, 10)), "changed back");
        assert_eq!(changing, None);
        assert!(!settled(&seen, &mut changing, vec![None]), "gone");
        assert!(settled(&seen, &mut changing, vec![None]), "gone for a tick");
    }
}
