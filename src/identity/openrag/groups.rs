//! IdP groups → OpenRag partition memberships (`OIDC_CLAIM_GROUPS`), with OpenRag's semantics
//! (docs/openrag-backend.md#groups): prefix stripped, pattern matched, role lower-cased and one
//! of viewer/editor/owner, highest role per partition; missing memberships added, differing
//! ones updated, and — with `OIDC_GROUP_SYNC_PRUNE=true`, and only when the claim is present as
//! a string or a list — absent ones removed. Never `is_admin`. Groups come from the verified ID
//! token only. A sync never fails a login: problems are logged (a partition the backend does
//! not have, a refusal because the backend lacks `SUPER_ADMIN_MODE=true`) and the rest goes on.

use super::admin::{AdminClient, AdminError, Membership};
use crate::config::access::GroupSync;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

const ROLES: [&str; 3] = ["viewer", "editor", "owner"];

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).unwrap_or(0)
}

/// The memberships the token asks for, partition → role; `None` when the claim is missing,
/// null or malformed (then nothing is pruned).
pub fn desired(g: &GroupSync, claims: &Map<String, Value>) -> Option<BTreeMap<String, String>> {
    let groups = crate::claims::groups(claims, &g.claim)?;
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for group in &groups {
        let Some(rest) = group.strip_prefix(g.prefix.as_str()) else {
            continue;
        };
        let Some(c) = g.pattern.captures(rest) else {
            continue;
        };
        let partition = c.get(1).map_or("", |m| m.as_str()).trim_matches('/');
        let role = c.get(2).map_or("", |m| m.as_str()).to_ascii_lowercase();
        if partition.is_empty() || !ROLES.contains(&role.as_str()) {
            continue;
        }
        match out.get(partition) {
            Some(have) if rank(have) >= rank(&role) => {}
            _ => {
                out.insert(partition.to_owned(), role);
            }
        }
    }
    Some(out)
}

/// What to change: `(partition, role)` to add and to update, partitions to leave.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub add: Vec<(String, String)>,
    pub update: Vec<(String, String)>,
    pub remove: Vec<String>,
}

pub fn plan(
    desired: Option<&BTreeMap<String, String>>,
    current: &[Membership],
    prune: bool,
) -> Plan {
    let mut p = Plan::default();
    let Some(desired) = desired else {
        return p;
    };
    for (partition, role) in desired {
        match current.iter().find(|m| &m.partition == partition) {
            None => p.add.push((partition.clone(), role.clone())),
            Some(m) if !m.role.eq_ignore_ascii_case(role) => {
                p.update.push((partition.clone(), role.clone()))
            }
            Some(_) => {}
        }
    }
    if prune {
        p.remove = current
            .iter()
            .filter(|m| !desired.contains_key(&m.partition))
            .map(|m| m.partition.clone())
            .collect();
    }
    p
}

/// Partitions remembered as refused (their WARN said once) at most.
const MAX_WARNED: usize = 1024;

/// The sync, with what it has already warned about (a partition refused once is not logged
/// at WARN at every login).
pub struct GroupSyncer {
    pub settings: GroupSync,
    warned: Mutex<HashSet<String>>,
}

impl GroupSyncer {
    pub fn new(settings: GroupSync) -> Self {
        GroupSyncer {
            settings,
            warned: Mutex::default(),
        }
    }

    /// Reconciles user `user`'s memberships with the groups of verified ID-token `claims`.
    pub async fn sync(&self, admin: &AdminClient, user: u64, claims: &Map<String, Value>) {
        let desired = desired(&self.settings, claims);
        if desired.is_none() && !self.settings.prune {
            return;
        }
        let current = match admin.get_user(user).await {
            Ok(u) => u.memberships,
            Err(e) => {
                tracing::warn!(user_id = user, error = %crate::http_json::error_chain(&e), "group sync: cannot read the user's memberships");
                return;
            }
        };
        let plan = plan(desired.as_ref(), &current, self.settings.prune);
        for (p, role) in &plan.add {
            let r = admin.add_member(p, user, role).await;
            self.outcome(p, user, "add", r);
        }
        for (p, role) in &plan.update {
            let r = admin.set_role(p, user, role).await;
            self.outcome(p, user, "update", r);
        }
        for p in &plan.remove {
            let r = admin.remove_member(p, user).await;
            self.outcome(p, user, "remove", r);
        }
    }

    fn outcome(&self, partition: &str, user: u64, op: &str, r: Result<(), AdminError>) {
        match r {
            Ok(()) => tracing::info!(partition, user_id = user, op, "group sync"),
            Err(AdminError::Status { status, .. }) if status == http::StatusCode::NOT_FOUND => {
                tracing::info!(
                    partition,
                    user_id = user,
                    op,
                    "group sync: the backend has no such partition; skipped"
                )
            }
            Err(AdminError::Status { status, detail }) if status == http::StatusCode::FORBIDDEN => {
                let first = {
                    let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
                    // Partition names come from the IdP's claims: bounded, so that a user
                    // with endless groups cannot grow this; past it, warnings may repeat.
                    if warned.len() >= MAX_WARNED {
                        warned.clear();
                    }
                    warned.insert(partition.to_owned())
                };
                if first {
                    tracing::warn!(partition, user_id = user, op, detail, "group sync refused by the backend: its admin may manage partitions it does not own only with SUPER_ADMIN_MODE=true");
                }
            }
            Err(e) => {
                tracing::warn!(partition, user_id = user, op, error = %crate::http_json::error_chain(&e), "group sync failed")
            }
        }
    }
}

#[cfg(test)]
mod tests;
