//! The service against a real nats-server: requests end to end, heartbeats, cancels, the
//! micro registration, panics, oversized results and the drain.

mod support;

use std::time::Duration;

use futures::StreamExt;
use jetbridge::{HandlerError, Output, Service, Task};
use serde_json::{Value, json};
use support::{NatsServer, request, task_request};
use tokio::sync::{mpsc, oneshot};

/// A handler that waits for its attempt to be cancelled and reports why.
async fn wait_for_cancel(task: Task) -> Result<Output, HandlerError> {
    task.heartbeat(Some(0.5), Some("half way"))
        .await
        .expect("heartbeat");
    task.cancelled().await;
    let reason = task.cancel_reason().expect("a reason once cancelled");
    Err(HandlerError::retry("cancelled", reason.as_str()))
}

/// The next message of `subscriber` as JSON, failing the test after 10 s.
async fn next_json(subscriber: &mut async_nats::Subscriber) -> Value {
    let message = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
        .await
        .expect("a message within 10 s")
        .expect("subscription open");
    serde_json::from_slice(&message.payload).expect("JSON message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_answered_and_registered() {
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let client = server.connect().await;
    let service = Service::builder("jetbridge-test", "1.0.0")
        .handler(
            "echo",
            |mut task: Task| async move { Ok(task.take_payload()) },
        )
        .handler("email:new", |task: Task| async move {
            Ok(Output::Json(
                json!({"attempt": task.attempt(), "queue": task.queue()}),
            ))
        })
        .start(client.clone())
        .await
        .expect("service starts");

    let payload = json!({"to": "ada@example.com", "n": [1, 2.5, "x"]});
    let (headers, body) = request(
        &client,
        "jetbridge.task.echo",
        &task_request("echo", "tokenEcho1", payload.clone(), 0),
    )
    .await;
    assert!(headers.is_empty(), "{headers:?}");
    assert_eq!(
        body,
        json!({"type": "io.jetbridge.v1.task_reply", "protocol": 1, "status": "ok",
               "attempt_token": "tokenEcho1", "result_encoding": "json", "result": payload})
    );

    let (_, body) = request(
        &client,
        "jetbridge.task.email:new",
        &task_request("email:new", "tokenMail1", Value::Null, 0),
    )
    .await;
    assert_eq!(body["result"], json!({"attempt": 1, "queue": "DEFAULT"}));

    // The body is authoritative: a type without a handler is refused whatever the subject.
    let (headers, body) = request(
        &client,
        "jetbridge.task.echo",
        &task_request("resize", "tokenResz1", Value::Null, 0),
    )
    .await;
    assert_eq!(body["status"], "terminate");
    assert_eq!(body["error"]["code"], "unknown_task_type");
    assert_eq!(headers["Nats-Service-Error-Code"], "400");

    let mut v2 = task_request("echo", "tokenVer21", Value::Null, 0);
    v2["protocol"] = json!(2);
    let (headers, body) = request(&client, "jetbridge.task.echo", &v2).await;
    assert_eq!(body["status"], "retry");
    assert_eq!(body["error"]["code"], "unsupported_protocol");
    assert_eq!(body["supported_protocols"], json!([1]));
    assert_eq!(headers["Nats-Service-Error-Code"], "505");

    let info = client
        .request("$SRV.INFO.jetbridge-test", "".into())
        .await
        .expect("micro INFO reply");
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["metadata"]["jetbridge.protocols"], "1,1.1");
    assert_eq!(
        info["metadata"]["jetbridge.sdk"],
        format!("rust/{}", env!("CARGO_PKG_VERSION"))
    );
    let endpoint = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subject"] == "jetbridge.task.email:new")
        .expect("an endpoint for email:new");
    assert_eq!(endpoint["queue_group"], "jetbridge");
    assert_eq!(endpoint["metadata"]["jetbridge.task_type"], "email:new");

    service.drain().await.expect("drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_flow_and_cancels_stop_the_handler() {
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let client = server.connect().await;
    let service = Service::builder("jetbridge-test", "1.0.0")
        .handler("wait", wait_for_cancel)
        .start(client.clone())
        .await
        .expect("service starts");

    let token = "tokenWait1";
    let body = task_request("wait", token, Value::Null, 50);
    let mut heartbeats = client.subscribe(format!("test.hb.{token}")).await.unwrap();
    client.flush().await.unwrap();
    let reply = tokio::spawn({
        let client = client.clone();
        async move { request(&client, "jetbridge.task.wait", &body).await }
    });

    let explicit = next_json(&mut heartbeats).await;
    assert_eq!(
        explicit,
        json!({"type": "io.jetbridge.v1.heartbeat", "protocol": 1, "task_id": format!("task-{token}"),
               "attempt_token": token, "progress": 0.5, "message": "half way"})
    );
    let automatic = next_json(&mut heartbeats).await;
    assert_eq!(automatic["attempt_token"], token);
    assert!(automatic.get("progress").is_none(), "{automatic}");

    // A cancel for another attempt is ignored (its reason would show otherwise); the one for
    // ours stops the handler.
    for (cancel_token, reason) in [("someOtherToken", "timeout"), (token, "operator")] {
        let cancel = json!({"type": "io.jetbridge.v1.cancel", "protocol": 1,
                            "task_id": format!("task-{token}"), "attempt_token": cancel_token,
                            "reason": reason});
        let body = serde_json::to_vec(&cancel).unwrap();
        client
            .publish(format!("test.cancel.{token}"), body.into())
            .await
            .unwrap();
    }
    let (headers, body) = reply.await.unwrap();
    assert_eq!(body["status"], "retry");
    assert_eq!(
        body["error"],
        json!({"code": "cancelled", "message": "operator"})
    );
    assert_eq!(body["attempt_token"], token);
    assert_eq!(headers["Nats-Service-Error-Code"], "500");

    service.drain().await.expect("drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_oversized_results_become_errors() {
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let client = server.connect().await;
    let service = Service::builder("jetbridge-test", "1.0.0")
        .handler("panic", |_task: Task| async move {
            panic!("planned panic");
        })
        .handler("big", |_task: Task| async move {
            Ok(Output::bytes(
                vec![b'a'; 2 << 20],
                "application/octet-stream",
            ))
        })
        .start(client.clone())
        .await
        .expect("service starts");

    let (_, body) = request(
        &client,
        "jetbridge.task.panic",
        &task_request("panic", "tokenPanic", Value::Null, 0),
    )
    .await;
    assert_eq!(body["status"], "retry");
    assert_eq!(body["error"]["code"], "handler_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("planned panic")
    );

    // The service survived the panic.
    let (_, body) = request(
        &client,
        "jetbridge.task.big",
        &task_request("big", "tokenBig01", Value::Null, 0),
    )
    .await;
    assert_eq!(body["status"], "terminate");
    assert_eq!(body["error"]["code"], "result_too_large");

    service.drain().await.expect("drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_running_attempts_then_cancels_stragglers() {
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let client = server.connect().await;
    let (started_tx, mut started) = mpsc::unbounded_channel::<String>();
    let (release_tx, release) = oneshot::channel::<()>();
    let release = std::sync::Mutex::new(Some(release));
    let service = Service::builder("jetbridge-test", "1.0.0")
        .drain_timeout(Duration::from_millis(500))
        .handler("finish", move |task: Task| {
            let started = started_tx.clone();
            let release = release.lock().unwrap().take().expect("one finish attempt");
            async move {
                started.send(task.id().to_owned()).unwrap();
                release.await.unwrap();
                Ok(Output::Json(json!({"cancelled": task.is_cancelled()})))
            }
        })
        .handler("wait", wait_for_cancel)
        .start(client.clone())
        .await
        .expect("service starts");

    let mut straggler_heartbeats = client.subscribe("test.hb.tokenStrag").await.unwrap();
    client.flush().await.unwrap();
    let finishing = tokio::spawn({
        let client = client.clone();
        async move {
            request(
                &client,
                "jetbridge.task.finish",
                &task_request("finish", "tokenFini1", Value::Null, 0),
            )
            .await
        }
    });
    let straggling = tokio::spawn({
        let client = client.clone();
        async move {
            request(
                &client,
                "jetbridge.task.wait",
                &task_request("wait", "tokenStrag", Value::Null, 0),
            )
            .await
        }
    });
    assert_eq!(started.recv().await.unwrap(), "task-tokenFini1");
    straggler_heartbeats
        .next()
        .await
        .expect("the straggler is running");

    let (shutdown_tx, shutdown) = oneshot::channel::<()>();
    let serving = tokio::spawn(service.run_until(async move { shutdown.await.unwrap() }));
    shutdown_tx.send(()).unwrap();
    release_tx.send(()).unwrap();

    let (_, body) = finishing.await.unwrap();
    assert_eq!(body["result"], json!({"cancelled": false}));
    let (_, body) = straggling.await.unwrap();
    assert_eq!(
        body["error"],
        json!({"code": "cancelled", "message": "drain"})
    );
    serving.await.unwrap().expect("drain succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slot_serves_every_task_type_one_attempt_at_a_time() {
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let client = server.connect().await;
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<&str>::new()));
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let (release_tx, release) = oneshot::channel::<()>();
    let release = std::sync::Mutex::new(Some(release));
    let service = Service::builder("jetbridge-test", "1.0.0")
        .concurrency(1)
        .handler("hold", {
            let log = log.clone();
            move |_task: Task| {
                let (log, started) = (log.clone(), started_tx.clone());
                let release = release.lock().unwrap().take().expect("one hold attempt");
                async move {
                    started.send(()).unwrap();
                    release.await.unwrap();
                    log.lock().unwrap().push("hold done");
                    Ok(Output::Json(Value::Null))
                }
            }
        })
        .handler("echo", {
            let log = log.clone();
            move |mut task: Task| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push("echo started");
                    Ok(task.take_payload())
                }
            }
        })
        .start(client.clone())
        .await
        .expect("service starts");

    let hold = tokio::spawn({
        let client = client.clone();
        async move {
            request(
                &client,
                "jetbridge.task.hold",
                &task_request("hold", "tokenHold1", Value::Null, 0),
            )
            .await
        }
    });
    started.recv().await.unwrap();
    let echo = tokio::spawn({
        let client = client.clone();
        async move {
            request(
                &client,
                "jetbridge.task.echo",
                &task_request("echo", "tokenEcho2", json!(7), 0),
            )
            .await
        }
    });
    client.flush().await.unwrap();
    release_tx.send(()).unwrap();

    assert_eq!(hold.await.unwrap().1["status"], "ok");
    assert_eq!(echo.await.unwrap().1["result"], 7);
    assert_eq!(*log.lock().unwrap(), ["hold done", "echo started"]);
    service.drain().await.expect("drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_stats_count_replies_by_status() {
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let client = server.connect().await;
    let service = Service::builder("jetbridge-stats", "1.0.0")
        .handler("flaky", |task: Task| async move {
            match task.attempt() {
                1 => Err(HandlerError::retry("flaky", "try again")),
                2 => Err(HandlerError::terminate("broken", "give up")),
                _ => Ok(Output::Json(Value::Null)),
            }
        })
        .start(client.clone())
        .await
        .expect("service starts");

    for attempt in 1..=3 {
        let mut body = task_request("flaky", &format!("tokenFlaky{attempt}"), Value::Null, 0);
        body["attempt"] = json!(attempt);
        request(&client, "jetbridge.task.flaky", &body).await;
    }
    let stats = client
        .request("$SRV.STATS.jetbridge-stats", "".into())
        .await
        .expect("micro STATS reply");
    let stats: Value = serde_json::from_slice(&stats.payload).unwrap();
    assert_eq!(
        stats["endpoints"][0]["data"],
        json!({"running": 0, "ok": 1, "retry": 1, "terminate": 1})
    );
    service.drain().await.expect("drain");
}
