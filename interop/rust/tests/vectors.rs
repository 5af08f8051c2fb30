//! Every case of the shared vectors in `protocol/vectors/`, read as each file's `description`
//! says.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jetbridge::protocol::{
    CancelReason, EncodedReply, Payload, decode_cancel, decode_request, encode_heartbeat,
};
use jetbridge::{HandlerError, Output};
use serde_json::Value;

/// One vector file: its top-level members and its cases.
struct Vectors {
    attempt_token: String,
    cases: Vec<Value>,
}

fn load(file: &str) -> Vectors {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../protocol/vectors")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    let mut doc: Value = serde_json::from_str(&text).expect("vector file is JSON");
    let cases = doc["cases"]
        .as_array_mut()
        .expect("cases")
        .drain(..)
        .collect();
    let attempt_token = doc["attempt_token"]
        .as_str()
        .expect("attempt_token")
        .to_owned();
    assert!(!attempt_token.is_empty());
    Vectors {
        attempt_token,
        cases,
    }
}

/// The raw bytes of a case: `body_text` as is, or `body` serialized.
fn raw_body(case: &Value) -> Vec<u8> {
    match (&case["body_text"], &case["body"]) {
        (Value::String(text), _) => text.as_bytes().to_vec(),
        (_, body) if !body.is_null() => serde_json::to_vec(body).unwrap(),
        _ => panic!("case {} has neither body nor body_text", name(case)),
    }
}

fn name(case: &Value) -> &str {
    case["name"].as_str().unwrap_or("?")
}

fn headers_of(encoded: &EncodedReply) -> BTreeMap<String, String> {
    encoded
        .headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn expected_headers(case: &Value) -> BTreeMap<String, String> {
    case["headers"]
        .as_object()
        .map(|headers| {
            headers
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("header value").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn body_json(encoded: &EncodedReply) -> Value {
    serde_json::from_slice(&encoded.body).expect("reply body is JSON")
}

#[test]
fn task_request_decisions_and_payloads() {
    let vectors = load("task_request.json");
    assert!(!vectors.cases.is_empty());
    for case in &vectors.cases {
        let name = name(case);
        let expect = &case["expect"];
        let decision = decode_request(&raw_body(case));
        match expect["decision"].as_str() {
            Some("handle") => {
                let request = decision.unwrap_or_else(|r| panic!("{name}: rejected: {r:?}"));
                assert_eq!(expect["valid"], true, "{name}");
                check_payload(name, &request.payload, &expect["payload"]);
                assert_eq!(request.attempt_token, vectors.attempt_token, "{name}");
                let body = &case["body"];
                assert_eq!(request.task_id, body["task_id"], "{name}");
                assert_eq!(request.task_type, body["task_type"], "{name}");
                // Compared as numbers: the vectors write some integers as 1.0 (SPEC §1.1).
                assert_eq!(
                    Some(request.attempt as f64),
                    body["attempt"].as_f64(),
                    "{name}"
                );
                assert_eq!(
                    Some(request.budget_ms as f64),
                    body["budget_ms"].as_f64(),
                    "{name}"
                );
                assert_eq!(
                    request.heartbeat_ack,
                    expect["heartbeat_ack"].as_bool().unwrap_or(false),
                    "{name}"
                );
                assert_eq!(
                    request.deadline.is_some(),
                    !body["deadline"].is_null(),
                    "{name}"
                );
                assert_eq!(
                    request.traceparent.as_deref(),
                    body["traceparent"].as_str(),
                    "{name}"
                );
            }
            Some("reject") => {
                let rejection = decision
                    .err()
                    .unwrap_or_else(|| panic!("{name}: not rejected"));
                assert_eq!(expect["valid"], false, "{name}");
                let want = &expect["reply"];
                assert_eq!(rejection.code(), want["error_code"], "{name}");
                let encoded = rejection.reply().encode(rejection.attempt_token());
                let body = body_json(&encoded);
                assert_eq!(body["type"], "io.jetbridge.v1.task_reply", "{name}");
                assert_eq!(body["protocol"], 1, "{name}");
                assert_eq!(body["status"], want["status"], "{name}");
                assert_eq!(body["error"]["code"], want["error_code"], "{name}");
                assert!(body.get("retry_after_ms").is_none(), "{name}");
                match want.get("supported_protocols") {
                    Some(protocols) => {
                        assert_eq!(&body["supported_protocols"], protocols, "{name}")
                    }
                    None => assert!(body.get("supported_protocols").is_none(), "{name}"),
                }
                let headers = headers_of(&encoded);
                assert_eq!(
                    headers["Nats-Service-Error-Code"],
                    want["service_error_code"].to_string(),
                    "{name}"
                );
                assert_eq!(
                    headers["Nats-Service-Error"],
                    body["error"]["message"].as_str().unwrap(),
                    "{name}"
                );
            }
            other => panic!("{name}: unknown decision {other:?}"),
        }
        if let Some(schema_valid) = case["schema_valid"].as_bool() {
            assert_eq!(
                schema_valid, expect["valid"],
                "{name}: schema_valid vs valid"
            );
        }
    }
}

fn check_payload(name: &str, payload: &Payload, want: &Value) {
    match (want["kind"].as_str(), payload) {
        (Some("json"), Payload::Json(value)) => assert_eq!(value, &want["value"], "{name}"),
        (Some("bytes"), Payload::Bytes { data, content_type }) => {
            assert_eq!(STANDARD.encode(data), want["base64"], "{name}");
            assert_eq!(content_type, &want["content_type"], "{name}");
        }
        _ => panic!("{name}: payload {payload:?}, expected {want}"),
    }
}

/// The output or error a handler returns for a reply vector's `intent`.
fn handler_result(intent: &Value) -> Result<Output, HandlerError> {
    let (kind, args) = intent
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("an intent has one member");
    let text = |key: &str| args[key].as_str().expect(key).to_owned();
    match kind.as_str() {
        "ok" => Ok(Output::Json(args.clone())),
        "ok_bytes" => Ok(Output::bytes(
            STANDARD.decode(text("base64")).unwrap(),
            text("content_type"),
        )),
        "retry" => {
            let error = HandlerError::retry(text("code"), text("message"));
            Err(match args["retry_after_ms"].as_u64() {
                Some(ms) => error.after(Duration::from_millis(ms)),
                None => error,
            })
        }
        "terminate" => Err(HandlerError::terminate(text("code"), text("message"))),
        other => panic!("unknown intent {other}"),
    }
}

#[test]
fn task_reply_intents_encode_canonically() {
    let vectors = load("task_reply.json");
    let mut checked = 0;
    for case in vectors
        .cases
        .iter()
        .filter(|case| case.get("intent").is_some())
    {
        let name = name(case);
        let reply = match handler_result(&case["intent"]) {
            Ok(output) => jetbridge::protocol::Reply::Ok(output),
            Err(error) => error.into_reply(),
        };
        let encoded = reply.encode(Some(&vectors.attempt_token));
        assert_eq!(body_json(&encoded), case["body"], "{name}: body");
        assert_eq!(
            headers_of(&encoded),
            expected_headers(case),
            "{name}: headers"
        );
        checked += 1;
    }
    assert!(checked > 0, "no intent cases found");
}

#[test]
fn heartbeat_intents_encode_canonically() {
    let vectors = load("heartbeat.json");
    let mut checked = 0;
    for case in &vectors.cases {
        let name = name(case);
        let body = &case["body"];
        if let Some(intent) = case.get("intent") {
            let encoded = encode_heartbeat(
                body["task_id"].as_str().unwrap(),
                &vectors.attempt_token,
                intent["progress"].as_f64(),
                intent["message"].as_str(),
            )
            .unwrap_or_else(|err| panic!("{name}: {err}"));
            let encoded: Value = serde_json::from_slice(&encoded).unwrap();
            assert_eq!(&encoded, body, "{name}");
            checked += 1;
        } else if case["expect"]["valid"] == false {
            // The library must never send a heartbeat the dispatcher would refuse.
            if let Some(progress) = body.get("progress").and_then(Value::as_f64) {
                assert!(
                    encode_heartbeat("t", &vectors.attempt_token, Some(progress), None).is_err(),
                    "{name}: invalid progress {progress} was encoded"
                );
            }
        }
    }
    assert!(checked > 0, "no intent cases found");
}

#[test]
fn cancel_validity() {
    let vectors = load("cancel.json");
    for case in &vectors.cases {
        let name = name(case);
        let expect = &case["expect"];
        let decoded = decode_cancel(&raw_body(case));
        if expect["valid"] == true {
            let cancel = decoded.unwrap_or_else(|| panic!("{name}: refused"));
            assert_eq!(cancel.reason.as_str(), expect["reason"], "{name}");
            assert!(cancel.reason.is_from_dispatcher(), "{name}");
            assert_eq!(cancel.attempt_token, vectors.attempt_token, "{name}");
        } else {
            assert_eq!(decoded, None, "{name}: accepted");
        }
    }
    assert!(!CancelReason::Draining.is_from_dispatcher());
}
