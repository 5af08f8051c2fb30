//! Middleware against a real nats-server: order, short-circuit, a changed result, patterns and
//! the built-ins.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jetbridge::middleware::{HandlerResult, Logging, Timeout};
use jetbridge::{HandlerError, Next, Output, Service, Task};
use serde_json::{Value, json};
use support::{NatsServer, request, task_request};

type Log = Arc<Mutex<Vec<String>>>;

/// A middleware that records when the chain passes it, both ways.
fn trace(
    log: &Log,
    name: &'static str,
) -> impl Fn(Task, Next) -> futures::future::BoxFuture<'static, HandlerResult> + Send + Sync + 'static
{
    let log = log.clone();
    move |task: Task, next: Next| {
        let log = log.clone();
        Box::pin(async move {
            log.lock().unwrap().push(format!("{name}>"));
            let result = next.run(task).await;
            log.lock().unwrap().push(format!("<{name}"));
            result
        })
    }
}

fn take(log: &Log) -> String {
    std::mem::take(&mut *log.lock().unwrap()).join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_run_in_order_and_can_short_circuit_or_change_the_result() {
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let client = server.connect().await;
    let log: Log = Arc::default();
    let handler_log = log.clone();
    let handler = move |_task: Task| {
        let log = handler_log.clone();
        async move {
            log.lock().unwrap().push("handler".to_owned());
            Ok(Output::Json(json!("sent")))
        }
    };
    let service = Service::builder("jetbridge-middleware", "1.0.0")
        .middleware_for("email:*", trace(&log, "email"))
        .middleware(trace(&log, "a"))
        .middleware(trace(&log, "b"))
        .middleware_for("email:*", |task: Task, next: Next| async move {
            if task.attempt() > 1 {
                return Err(HandlerError::terminate("blocked", "only one try"));
            }
            let result = next.run(task).await?;
            let Output::Json(value) = result else {
                unreachable!("a JSON result")
            };
            Ok(Output::Json(json!({ "wrapped": value })))
        })
        .handler("email:new", handler.clone())
        .handler("image:resize", handler)
        .start(client.clone())
        .await
        .expect("service starts");

    let (_, reply) = request(
        &client,
        "jetbridge.task.email:new",
        &task_request("email:new", "tokenMw0001", Value::Null, 0),
    )
    .await;
    assert_eq!(reply["result"], json!({ "wrapped": "sent" }));
    assert_eq!(take(&log), "a> b> email> handler <email <b <a");

    let mut second = task_request("email:new", "tokenMw0002", Value::Null, 0);
    second["attempt"] = json!(2);
    let (_, reply) = request(&client, "jetbridge.task.email:new", &second).await;
    assert_eq!(reply["status"], "terminate");
    assert_eq!(reply["error"]["code"], "blocked");
    assert_eq!(take(&log), "a> b> email> <email <b <a");

    let (_, reply) = request(
        &client,
        "jetbridge.task.image:resize",
        &task_request("image:resize", "tokenMw0003", Value::Null, 0),
    )
    .await;
    assert_eq!(reply["result"], "sent");
    assert_eq!(take(&log), "a> b> handler <b <a");
    service.drain().await.expect("drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_middleware_time_out_log_and_catch_panics() {
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let client = server.connect().await;
    let service = Service::builder("jetbridge-builtins", "1.0.0")
        .middleware(Logging)
        .middleware_for("slow", Timeout(Duration::from_millis(30)))
        .middleware_for("bad:*", |_task: Task, _next: Next| async move {
            panic!("middleware bug")
        })
        .handler("slow", |task: Task| async move {
            task.cancelled().await;
            let reason = task.cancel_reason().expect("a reason once cancelled");
            Err(HandlerError::retry("cancelled", reason.as_str()))
        })
        .handler("bad:one", |_task: Task| async move {
            Ok(Output::Json(Value::Null))
        })
        .start(client.clone())
        .await
        .expect("service starts");

    let (_, reply) = request(
        &client,
        "jetbridge.task.slow",
        &task_request("slow", "tokenSlow01", Value::Null, 0),
    )
    .await;
    assert_eq!(
        reply["error"],
        json!({ "code": "cancelled", "message": "timeout" })
    );

    let (_, reply) = request(
        &client,
        "jetbridge.task.bad:one",
        &task_request("bad:one", "tokenBad001", Value::Null, 0),
    )
    .await;
    assert_eq!(reply["status"], "retry");
    assert_eq!(reply["error"]["code"], "handler_error");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("middleware bug"),
        "{reply}"
    );
    service.drain().await.expect("drain");
}
