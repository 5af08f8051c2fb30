//! The Prometheus metrics middleware (feature `prometheus`) through a real service: attempts by
//! type and outcome, their durations, and those running.

mod support;

use jetbridge::prometheus::PrometheusMetrics;
use jetbridge::{HandlerError, Output, Service, Task};
use prometheus::Registry;
use serde_json::{Value, json};
use support::{NatsServer, request, task_request};

/// The value of the sample `name{labels}` in the registry's text exposition.
fn sample(registry: &Registry, name: &str, labels: &str) -> Option<f64> {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_counted_by_type_and_outcome() {
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let client = server.connect().await;
    let registry = Registry::new();
    let metrics = PrometheusMetrics::with_registry(&registry).expect("registered");
    assert!(
        PrometheusMetrics::with_registry(&registry).is_err(),
        "names taken: clone instead"
    );
    let service = Service::builder("jetbridge-prometheus", "1.0.0")
        .middleware(metrics.clone())
        .handler("email:send", |task: Task| async move {
            match task.json::<Value>()?.as_str() {
                Some("busy") => Err(HandlerError::retry("smtp_busy", "try later")),
                Some("bad") => Err(HandlerError::terminate("bad_address", "no such mailbox")),
                Some("panic") => panic!("handler bug"),
                _ => Ok(Output::Json(json!("sent"))),
            }
        })
        .start(client.clone())
        .await
        .expect("service starts");

    for (i, payload) in ["ok", "ok", "busy", "bad", "panic"].into_iter().enumerate() {
        let (_, reply) = request(
            &client,
            "jetbridge.task.email:send",
            &task_request("email:send", &format!("tokenProm{i:02}"), json!(payload), 0),
        )
        .await;
        let want = match payload {
            "ok" => "ok",
            "bad" => "terminate",
            _ => "retry",
        };
        assert_eq!(reply["status"], want, "{payload}: {reply}");
    }
    service.drain().await.expect("drain");

    let t = r#"type="email:send""#;
    let count = |outcome: &str| {
        sample(
            &registry,
            "jetbridge_handler_attempts_total",
            &format!(r#"outcome="{outcome}",{t}"#),
        )
    };
    assert_eq!(count("ok"), Some(2.0));
    assert_eq!(count("retry"), Some(1.0));
    assert_eq!(count("terminate"), Some(1.0));
    assert_eq!(count("error"), Some(1.0));
    assert_eq!(count("cancelled"), None);
    assert_eq!(
        sample(&registry, "jetbridge_handler_in_progress", t),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &registry,
            "jetbridge_handler_duration_seconds_count",
            &format!(r#"outcome="ok",{t}"#)
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &registry,
            "jetbridge_handler_duration_seconds_bucket",
            &format!(r#"outcome="retry",{t},le="3600""#)
        ),
        Some(1.0)
    );
}

/// The guide's sample (README.md, "Metrics") is the module's doc test, which test.sh compiles.
#[test]
fn the_guides_sample_is_the_doc_test() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let guide = std::fs::read_to_string(format!("{dir}/README.md")).unwrap();
    let source = std::fs::read_to_string(format!("{dir}/src/prometheus.rs")).unwrap();
    let start = guide
        .find("```rust\nlet metrics = PrometheusMetrics::new()")
        .expect("README.md has the sample");
    let sample = &guide[start + "```rust\n".len()..];
    let sample = &sample[..sample.find("```").unwrap()];
    let as_doc: String = sample.lines().map(|line| format!("//! {line}\n")).collect();
    assert!(
        source.contains(&as_doc),
        "src/prometheus.rs's doc test is not the guide's sample:\n{as_doc}"
    );
}
