//! Protocol 1.1 against a real nats-server: the receipt heartbeat, heartbeats with acks and
//! self-fencing, truthful `nats micro stats`, and riding out a server restart.

mod support;

use std::time::Duration;

use futures::StreamExt;
use jetbridge::{CancelReason, HandlerError, Output, Service, Task};
use serde_json::{Value, json};
use support::{NatsServer, request, task_request};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A handler that waits until it is cancelled and replies with the reason as a result, so
/// that a test sees both the reason and that the late reply was still sent.
async fn report_cancel(task: Task) -> Result<Output, HandlerError> {
    task.cancelled().await;
    let reason = task.cancel_reason().expect("a reason once cancelled");
    Ok(Output::Json(json!({ "cancelled": reason.as_str() })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_a_slot_is_heartbeated_from_receipt() {
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let client = server.connect().await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (release_tx, release) = oneshot::channel::<()>();
    let release = std::sync::Mutex::new(Some(release));
    let release = std::sync::Arc::new(release);
    let service = Service::builder("jetbridge-receipt", "1.0.0")
        .concurrency(1)
        .handler("work", move |task: Task| {
            let started = started_tx.clone();
            let release = release.lock().unwrap().take();
            async move {
                started.send(task.attempt_token().to_owned()).unwrap();
                if let Some(release) = release {
                    let _ = release.await;
                }
                Ok(Output::Json(Value::Null))
            }
        })
        .start(client.clone())
        .await
        .expect("service starts");

    let first = tokio::spawn({
        let client = client.clone();
        async move {
            request(
                &client,
                "jetbridge.task.work",
                &task_request("work", "tokenFirst1", Value::Null, 0),
            )
            .await
        }
    });
    assert_eq!(started.recv().await.unwrap(), "tokenFirst1");

    // An interval of a minute: only the receipt heartbeat can come in time.
    let mut beats = client.subscribe("test.hb.tokenQueued").await.unwrap();
    client.flush().await.unwrap();
    let queued = tokio::spawn({
        let client = client.clone();
        async move {
            request(
                &client,
                "jetbridge.task.work",
                &task_request("work", "tokenQueued", Value::Null, 60_000),
            )
            .await
        }
    });
    let beat = tokio::time::timeout(Duration::from_secs(10), beats.next())
        .await
        .expect("a receipt heartbeat within 10 s")
        .unwrap();
    let body: Value = serde_json::from_slice(&beat.payload).unwrap();
    assert_eq!(body["attempt_token"], "tokenQueued");
    assert!(beat.reply.is_none(), "a request without heartbeat_ack");
    assert!(
        started.try_recv().is_err(),
        "started before a slot was free"
    );

    release_tx.send(()).unwrap();
    assert_eq!(first.await.unwrap().1["status"], "ok");
    assert_eq!(queued.await.unwrap().1["status"], "ok");
    service.drain().await.expect("drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_requests_and_fence_the_attempt() {
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let client = server.connect().await;
    let service = Service::builder("jetbridge-fence", "1.0.0")
        .handler("work", report_cancel)
        .start(client.clone())
        .await
        .expect("service starts");

    // Acknowledged heartbeats keep the attempt running: five heartbeats over four intervals,
    // where three unacknowledged intervals would have fenced it. The interval is long enough
    // that acks delayed by a loaded machine still come within the heartbeat timeout.
    let mut acked = client.subscribe("test.hb.tokenAcked1").await.unwrap();
    client.flush().await.unwrap();
    let mut body = task_request("work", "tokenAcked1", Value::Null, 300);
    body["heartbeat_ack"] = json!(true);
    let running = tokio::spawn({
        let client = client.clone();
        async move { request(&client, "jetbridge.task.work", &body).await }
    });
    for _ in 0..5 {
        let beat = tokio::time::timeout(Duration::from_secs(10), acked.next())
            .await
            .expect("a heartbeat within 10 s")
            .unwrap();
        client
            .publish(beat.reply.expect("a heartbeat request"), "".into())
            .await
            .unwrap();
    }
    // Then nobody listens: the next heartbeat finds no responders and fences the attempt.
    drop(acked);
    let (_, reply) = running.await.unwrap();
    assert_eq!(reply["status"], "ok");
    assert_eq!(reply["result"], json!({ "cancelled": "lost" }));

    // A responder that never acknowledges: fenced after three intervals.
    let _silent = client.subscribe("test.hb.tokenSilent").await.unwrap();
    client.flush().await.unwrap();
    let mut body = task_request("work", "tokenSilent", Value::Null, 30);
    body["heartbeat_ack"] = json!(true);
    let sent = Instant::now();
    let (_, reply) = request(&client, "jetbridge.task.work", &body).await;
    assert_eq!(reply["result"], json!({ "cancelled": "lost" }));
    assert!(
        sent.elapsed() >= Duration::from_millis(90),
        "{:?}",
        sent.elapsed()
    );
    service.drain().await.expect("drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_exhaustion_cancels_with_timeout_and_the_reply_is_sent() {
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let client = server.connect().await;
    let service = Service::builder("jetbridge-budget", "1.0.0")
        .handler("work", report_cancel)
        .start(client.clone())
        .await
        .expect("service starts");
    let mut body = task_request("work", "tokenBudget", Value::Null, 0);
    body["budget_ms"] = json!(50);
    let (_, reply) = request(&client, "jetbridge.task.work", &body).await;
    assert_eq!(
        reply["result"],
        json!({ "cancelled": CancelReason::Timeout.as_str() })
    );
    service.drain().await.expect("drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_stats_count_failures_and_real_processing_time() {
    let Some(server) = NatsServer::start().await else {
        return;
    };
    let client = server.connect().await;
    let service = Service::builder("jetbridge-truth", "1.0.0")
        .handler("work", |task: Task| async move {
            match task.attempt() {
                1 => Err(HandlerError::retry("busy", "try later")
                    .after(Duration::from_secs(30 * 86_400))),
                2 => Err(HandlerError::terminate("broken", "give up")),
                3 => {
                    tokio::time::sleep(Duration::from_millis(200)).await; // the time measured
                    Ok(Output::Json(Value::Null))
                }
                _ => Ok(Output::Json(Value::Null)),
            }
        })
        .start(client.clone())
        .await
        .expect("service starts");

    for attempt in 1..=4 {
        let mut body = task_request("work", &format!("tokenTruth{attempt}"), Value::Null, 0);
        body["attempt"] = json!(attempt);
        let (headers, reply) = request(&client, "jetbridge.task.work", &body).await;
        if attempt == 1 {
            // retry_after_ms is clamped to 7 days (protocol 1.1 rule 6).
            assert_eq!(reply["retry_after_ms"], 604_800_000);
            assert_eq!(headers["Jetbridge-Retry-After-Ms"], "604800000");
        }
    }
    // A rejection, with an invalid token that is not echoed (protocol 1.1 rule 5).
    let mut bad = task_request("work", "tokenTruth5", Value::Null, 0);
    bad["attempt_token"] = json!("not a token!");
    let (_, reply) = request(&client, "jetbridge.task.work", &bad).await;
    assert_eq!(reply["error"]["code"], "bad_request");
    assert!(reply.get("attempt_token").is_none(), "{reply}");

    let stats = client
        .request("$SRV.STATS.jetbridge-truth", "".into())
        .await
        .expect("micro STATS reply");
    let stats: Value = serde_json::from_slice(&stats.payload).unwrap();
    let endpoint = &stats["endpoints"][0];
    assert_eq!(endpoint["num_requests"], 5, "{stats}");
    assert_eq!(endpoint["num_errors"], 3, "{stats}");
    assert!(
        endpoint["processing_time"].as_u64().unwrap() >= 200_000_000,
        "{stats}"
    );
    assert_eq!(
        endpoint["data"],
        json!({"running": 0, "ok": 2, "retry": 1, "terminate": 2})
    );
    service.drain().await.expect("drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_rides_out_a_server_restart() {
    let Some(mut server) = NatsServer::start().await else {
        return;
    };
    let connect = |url: String| async move {
        let (events_tx, events) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .reconnect_delay_callback(|_| Duration::from_millis(20))
            .event_callback(move |event| {
                let events = events_tx.clone();
                async move {
                    let _ = events.send(event);
                }
            })
            .connect(url)
            .await
            .expect("connect");
        (client, events)
    };
    // Waits for the client to lose its server and then connect again (subscribing again on the
    // way); the initial connection's event comes first.
    async fn reconnected(events: &mut mpsc::UnboundedReceiver<async_nats::Event>) {
        while !matches!(events.recv().await, Some(async_nats::Event::Disconnected)) {}
        while !matches!(events.recv().await, Some(async_nats::Event::Connected)) {}
    }
    let (service_client, mut service_events) = connect(server.url.clone()).await;
    let (client, mut client_events) = connect(server.url.clone()).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (release_tx, release) = tokio::sync::watch::channel(false);
    let service = Service::builder("jetbridge-restart", "1.0.0")
        .handler("work", move |task: Task| {
            let started = started_tx.clone();
            let mut release = release.clone();
            async move {
                started.send(()).unwrap();
                release.wait_for(|go| *go).await.unwrap();
                Ok(Output::Json(json!(task.attempt())))
            }
        })
        .start(service_client.clone())
        .await
        .expect("service starts");

    let running = tokio::spawn({
        let client = client.clone();
        async move {
            request(
                &client,
                "jetbridge.task.work",
                &task_request("work", "tokenRestart1", Value::Null, 0),
            )
            .await
        }
    });
    started.recv().await.unwrap();

    server.restart().await;
    reconnected(&mut service_events).await;
    reconnected(&mut client_events).await;
    // Both clients have subscribed again once the server answers a flush of each.
    service_client.flush().await.unwrap();
    client.flush().await.unwrap();
    release_tx.send(true).unwrap();
    let (_, reply) = running.await.unwrap();
    assert_eq!(
        reply["status"], "ok",
        "the attempt across the restart: {reply}"
    );
    let (_, reply) = request(
        &client,
        "jetbridge.task.work",
        &task_request("work", "tokenRestart2", Value::Null, 0),
    )
    .await;
    assert_eq!(
        reply["status"], "ok",
        "an attempt after the restart: {reply}"
    );
    service.drain().await.expect("drain");
}

/// A request with heartbeat_ack that looks sent ten intervals ago (`attempt_deadline −
/// budget_ms`), its deadline still 30 intervals ahead.
fn late_request(task_type: &str, token: &str, interval_ms: u64) -> Value {
    let mut body = task_request(task_type, token, Value::Null, interval_ms);
    body["heartbeat_ack"] = json!(true);
    body["budget_ms"] = json!(40 * interval_ms);
    body["attempt_deadline"] = json!(support::rfc3339(
        std::time::SystemTime::now() + Duration::from_millis(30 * interval_ms)
    ));
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_requests_start_only_after_an_acknowledged_heartbeat() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt;

    let Some(server) = NatsServer::start().await else {
        return;
    };
    let client = server.connect().await;
    let acks = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let service = Service::builder("jetbridge-late", "1.0.0")
        .handler("work", {
            let acks = acks.clone();
            move |task: Task| {
                started_tx
                    .send((task.attempt_token().to_owned(), acks.load(Ordering::SeqCst)))
                    .unwrap();
                async move { Ok(Output::Json(json!("ran"))) }
            }
        })
        .start(client.clone())
        .await
        .expect("service starts");

    // (a) Late, and its heartbeat finds no responders: the dispatcher gave it up, so the
    // handler never runs and the reply is retry/cancelled.
    let (_, reply) = request(
        &client,
        "jetbridge.task.work",
        &late_request("work", "tokenLateGone", 5_000),
    )
    .await;
    assert_eq!(reply["status"], "retry", "{reply}");
    assert_eq!(reply["error"]["code"], "cancelled", "{reply}");
    assert!(
        reply["error"]["message"].as_str().unwrap().contains("lost"),
        "{reply}"
    );
    assert!(started.try_recv().is_err(), "the handler ran");

    // (b) Late, and its heartbeat is acknowledged: it runs, after the ack.
    let mut beats = client.subscribe("test.hb.tokenLateAckd").await.unwrap();
    client.flush().await.unwrap();
    let responder = tokio::spawn({
        let client = client.clone();
        let acks = acks.clone();
        async move {
            while let Some(beat) = beats.next().await {
                acks.fetch_add(1, Ordering::SeqCst);
                let reply_to = beat.reply.expect("a heartbeat request");
                client.publish(reply_to, "".into()).await.unwrap();
            }
        }
    });
    let (_, reply) = request(
        &client,
        "jetbridge.task.work",
        &late_request("work", "tokenLateAckd", 5_000),
    )
    .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["result"], "ran");
    let (token, acks_at_start) = started.recv().await.unwrap();
    assert_eq!(token, "tokenLateAckd");
    assert_eq!(
        acks_at_start, 1,
        "started before its heartbeat was acknowledged"
    );
    responder.abort();

    // (c) Fresh, and done within the first heartbeat delay: no heartbeat at all.
    let mut beats = client.subscribe("test.hb.tokenFresh01").await.unwrap();
    client.flush().await.unwrap();
    let mut body = task_request("work", "tokenFresh01", Value::Null, 60_000);
    body["heartbeat_ack"] = json!(true);
    let sent = Instant::now();
    let (_, reply) = request(&client, "jetbridge.task.work", &body).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let took = sent.elapsed();
    // One connection: a heartbeat sent before the reply would have been delivered before it.
    if took < Duration::from_millis(250) {
        assert!(
            beats.next().now_or_never().is_none(),
            "a heartbeat for a fresh request done in {took:?}"
        );
    } else {
        eprintln!("reply took {took:?}, so a heartbeat was due: too loaded to check (c)");
    }
    service.drain().await.expect("drain");
}
