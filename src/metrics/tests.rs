//! Tests of the metrics' exposition.

use super::*;

#[test]
fn encodes_requests_by_method_and_status_class() {
    let m = Metrics::new(2);
    m.request_started();
    m.request_finished(&http::Method::GET, 204, Duration::from_millis(3));
    // Another thread records into the same sums (the in-flight gauge ends at 0).
    std::thread::scope(|s| {
        s.spawn(|| m.request_started());
    });
    m.request_finished(&http::Method::POST, 503, Duration::from_secs(100));
    m.upstream_error("timeout");
    let text = m.encode();
    assert!(
        text.contains(r#"sso_sidecar_http_requests_total{method="GET",status="2xx"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("sso_sidecar_http_requests_in_flight 0"),
        "{text}"
    );
    assert!(
        text.contains(r#"sso_sidecar_upstream_errors_total{kind="timeout"} 1"#),
        "{text}"
    );
    for line in [
        // 3 ms: in the 4 ms bucket (0.5 ms × 2^3), not in the 2 ms one; buckets cumulate.
        r#"sso_sidecar_http_request_duration_seconds_bucket{le="0.002"} 0"#,
        r#"sso_sidecar_http_request_duration_seconds_bucket{le="0.004"} 1"#,
        r#"sso_sidecar_http_request_duration_seconds_bucket{le="+Inf"} 2"#,
        "sso_sidecar_http_request_duration_seconds_count 2",
        "sso_sidecar_http_request_duration_seconds_sum 100.003",
        r#"sso_sidecar_http_requests_total{method="POST",status="5xx"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
}
