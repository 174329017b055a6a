use super::*;
use serde_json::json;

fn sync(prune: bool) -> GroupSync {
    let mut problems = Vec::new();
    let vars = crate::config::sources::Vars::layer(
        Vec::new(),
        vec![
            ("OIDC_CLAIM_GROUPS".to_owned(), "groups".to_owned()),
            ("OIDC_GROUP_SYNC_PRUNE".to_owned(), prune.to_string()),
        ],
    );
    let g = crate::config::access::parse_group_sync(&vars, &mut problems).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    g
}

fn claims(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn m(p: &str, r: &str) -> Membership {
    Membership {
        partition: p.into(),
        role: r.into(),
    }
}

#[test]
fn groups_map_to_partitions_with_the_highest_role() {
    // The default pattern is case-sensitive, as in OpenRag: `OWNER` does not match it.
    let c = claims(json!({"groups": [
        "/openrag/finance/viewer", "/openrag/finance/OWNER", "/openrag/finance/editor",
        "/openrag/hr/editor", "/openrag//legal//viewer", "/openrag/x/admin",
        "/other/sales/owner", "openrag/sales/owner", "/openrag/nested/team/viewer"
    ]}));
    let d = desired(&sync(false), &c).unwrap();
    let got: Vec<(&str, &str)> = d.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        got,
        [
            ("finance", "editor"),
            ("hr", "editor"),
            ("legal", "viewer"),
            ("nested/team", "viewer")
        ]
    );
}

#[test]
fn only_a_string_or_a_list_counts_and_only_then_prunes() {
    let g = sync(true);
    assert_eq!(
        desired(&g, &claims(json!({"groups": "/openrag/a/viewer"})))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        desired(&g, &claims(json!({"groups": []}))),
        Some(BTreeMap::new())
    );
    for c in [
        json!({}),
        json!({"groups": null}),
        json!({"groups": {"a": 1}}),
        json!({"groups": 3}),
    ] {
        let d = desired(&g, &claims(c.clone()));
        assert_eq!(d, None, "{c}");
        assert_eq!(
            plan(d.as_ref(), &[m("a", "owner")], true),
            Plan::default(),
            "{c} never prunes"
        );
    }
    let empty = desired(&g, &claims(json!({"groups": []})));
    assert_eq!(
        plan(empty.as_ref(), &[m("a", "owner")], true).remove,
        ["a"],
        "[] prunes"
    );
}

#[test]
fn the_plan_adds_updates_and_prunes_only_when_asked() {
    let d: BTreeMap<String, String> = [("a", "editor"), ("b", "viewer")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let current = [m("a", "viewer"), m("c", "owner")];
    let p = plan(Some(&d), &current, false);
    assert_eq!(p.add, [("b".to_owned(), "viewer".to_owned())]);
    assert_eq!(p.update, [("a".to_owned(), "editor".to_owned())]);
    assert!(p.remove.is_empty());
    assert_eq!(plan(Some(&d), &current, true).remove, ["c"]);
    assert_eq!(
        plan(Some(&d), &[m("a", "Editor"), m("b", "viewer")], true),
        Plan::default()
    );
}

#[test]
fn patterns_must_have_two_groups_with_openrags_messages() {
    for (pattern, msg) in [
        (
            "(.+)/(a)/(b)",
            "must expose exactly two capture groups (group 1 = partition, group 2 = role); got 3.",
        ),
        ("(.+)", "got 1."),
        ("(", "Invalid OIDC_GROUP_PATTERN '('"),
    ] {
        let mut problems = Vec::new();
        let vars = crate::config::sources::Vars::layer(
            Vec::new(),
            vec![("OIDC_GROUP_PATTERN".to_owned(), pattern.to_owned())],
        );
        assert!(crate::config::access::parse_group_sync(&vars, &mut problems).is_none());
        assert!(
            problems.iter().any(|p| p.contains(msg)),
            "{pattern}: {problems:?}"
        );
    }
    let mut problems = Vec::new();
    let vars = crate::config::sources::Vars::layer(
        Vec::new(),
        vec![
            ("OIDC_CLAIM_GROUPS".to_owned(), "g".to_owned()),
            (
                "OIDC_GROUP_PATTERN".to_owned(),
                "(?:x/)?(.+)-(\\w+)".to_owned(),
            ),
        ],
    );
    let g = crate::config::access::parse_group_sync(&vars, &mut problems).unwrap();
    let d = desired(&g, &claims(json!({"g": ["/openrag/x/sales-Owner"]}))).unwrap();
    assert_eq!(d.get("sales").map(String::as_str), Some("owner"));
}
