//! The daemon over a real Mosquitto with the real model: job lifecycle, streaming,
//! cancel, and every kind of bad input.
//!
//! `cargo test --release --test daemon_protocol`

mod daemon_support;

use std::time::Duration;

use daemon_support::*;
use serde_json::{json, Value};

fn has(v: &Value, path: &str) -> bool {
    let mut cur = v;
    for k in path.split('.') {
        match cur.get(k) {
            Some(x) => cur = x,
            None => return false,
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_states_in_order_full_result_and_streaming() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let dev = "lifecycle";
    let daemon = InProcessDaemon::start(daemon_config(&broker.url(), dev, state.path()));
    let reply = "test/reply/lifecycle";
    let mut c = Client::connect(&broker.url(), &[&format!("{P}/{dev}/#"), reply], false).await;
    wait_online(&mut c, P, dev).await;

    let job = json!({"id": "life-1", "model": MODEL, "prompt": "Once upon a time", "max_tokens": 12,
                     "stream": true, "trace": "summary"});
    c.submit_job(P, dev, job.to_string(), reply, b"corr-1")
        .await;
    let res = c
        .wait_for(
            Duration::from_secs(120),
            "result on the response topic",
            |m| m.topic == reply,
        )
        .await;
    assert_eq!(
        res.correlation.as_deref(),
        Some(&b"corr-1"[..]),
        "correlation data echoed"
    );
    let r = res.json();
    assert_eq!(r["state"], "succeeded", "{r}");
    // Let the tail (trace chunks) arrive.
    c.pump(Duration::from_millis(500)).await;

    // States in order.
    let statuses = c.on(&format!("{P}/{dev}/job/life-1/status"));
    let seq: Vec<String> = statuses
        .iter()
        .map(|s| match s["phase"].as_str() {
            Some(p) => format!("{}:{p}", s["state"].as_str().unwrap()),
            None => s["state"].as_str().unwrap().to_string(),
        })
        .collect();
    assert_eq!(
        seq,
        [
            "accepted",
            "running:load",
            "running:prefill",
            "running:decode",
            "succeeded"
        ],
        "status sequence"
    );
    for s in &statuses {
        assert!(s["at_unix_ns"].as_u64().unwrap() > 1_600_000_000_000_000_000);
        assert_eq!(s["device"], dev);
    }

    // Every field of the result schema.
    for f in [
        "id",
        "device",
        "state",
        "model.name",
        "model.file",
        "model.arch",
        "model.params",
        "model.quant",
        "model.size_bytes",
        "params.max_tokens",
        "params.temperature",
        "text",
        "finish_reason",
        "tokens.prompt",
        "tokens.generated",
        "timings.queue_ms",
        "timings.load_ms",
        "timings.prefill_ms",
        "timings.ttft_ms",
        "timings.decode_ms",
        "timings.total_ms",
        "timings.prefill_tps",
        "timings.decode_tps",
        "timings.token_latency_ms.p50",
        "timings.token_latency_ms.p90",
        "timings.token_latency_ms.p99",
        "timings.token_latency_ms.max",
        "memory.model_bytes",
        "memory.kv_bytes",
        "memory.rss_peak_bytes",
        "memory.mem_available_bytes",
        "energy.definitions",
        "energy.simulated",
        "energy.sample_rate_hz",
        "energy.samples",
        "energy.gaps",
        "energy.rails",
        "energy.j_per_token.decode",
        "energy.j_per_token.e2e",
        "energy.tokens_per_j",
        "thermal",
        "started_unix_ns",
        "finished_unix_ns",
    ] {
        assert!(has(&r, f), "result lacks '{f}': {r}");
    }
    assert_eq!(r["id"], "life-1");
    assert_eq!(r["device"], dev);
    assert_eq!(r["model"]["name"], MODEL);
    assert_eq!(r["params"]["max_tokens"], 12);
    assert_eq!(r["energy"]["simulated"], true);
    let rail = &r["energy"]["rails"][0];
    for f in [
        "name",
        "total",
        "idle_w",
        "avg_w",
        "peak_w",
        "energy_j",
        "active_energy_j",
    ] {
        assert!(rail.get(f).is_some(), "rail lacks '{f}': {rail}");
    }
    for f in ["load", "prefill", "decode", "total"] {
        assert!(rail["energy_j"].get(f).is_some(), "energy_j lacks '{f}'");
    }
    let generated = r["tokens"]["generated"].as_u64().unwrap();
    assert!((1..=12).contains(&generated));

    // Streaming: the pieces, in order, are the text.
    let tokens = c.on(&format!("{P}/{dev}/job/life-1/tokens"));
    assert_eq!(
        tokens.len() as u64,
        generated,
        "one token message per generated token"
    );
    let streamed: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(streamed, r["text"].as_str().unwrap());

    // The job's own result topic carries the same result.
    let own = c.on(&format!("{P}/{dev}/job/life-1/result"));
    assert_eq!(own.len(), 1);
    assert_eq!(own[0]["text"], r["text"]);

    // Trace (summary) arrived in chunks that reassemble to a trace with markers.
    let chunks = c.on(&format!("{P}/{dev}/job/life-1/trace"));
    assert!(!chunks.is_empty(), "trace chunks");
    let text: String = chunks
        .iter()
        .map(|ch| ch["json"].as_str().unwrap())
        .collect();
    let trace: Value = serde_json::from_str(&text).unwrap();
    assert!(trace["markers"].as_array().unwrap().len() as u64 >= generated);

    // Board status: online, with the model and the rail.
    let st = c.on(&format!("{P}/{dev}/status"));
    let last = st.last().unwrap();
    assert!(last["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == MODEL));
    assert_eq!(last["rails"][0], "5V_IN");
    // Live power arrives about once a second.
    c.wait_for(Duration::from_secs(5), "live power", |m| {
        m.topic == format!("{P}/{dev}/power")
    })
    .await;

    // A graceful stop publishes `offline` (retained).
    daemon.stop().await.unwrap();
    c.wait_for(Duration::from_secs(10), "offline status", |m| {
        m.topic == format!("{P}/{dev}/status") && m.json()["state"] == "offline"
    })
    .await;
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_and_running() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let dev = "cancel";
    let daemon = InProcessDaemon::start(daemon_config(&broker.url(), dev, state.path()));
    let reply = "test/reply/cancel";
    let mut c = Client::connect(&broker.url(), &[&format!("{P}/{dev}/#"), reply], false).await;
    wait_online(&mut c, P, dev).await;

    let long = |id: &str| {
        json!({"id": id, "model": MODEL, "prompt": "Count: 1, 2, 3,", "max_tokens": 2000,
               "ignore_eos": true, "n_ctx": 2048})
        .to_string()
    };
    c.submit_job(P, dev, long("run-1"), reply, b"run-1").await;
    c.submit_job(P, dev, long("queued-1"), reply, b"queued-1")
        .await;
    let st = |id: &str| format!("{P}/{dev}/job/{id}/status");
    let (s1, s2) = (st("run-1"), st("queued-1"));
    c.wait_for(Duration::from_secs(60), "run-1 decoding", |m| {
        m.topic == s1 && m.json()["phase"] == "decode"
    })
    .await;
    c.wait_for(Duration::from_secs(10), "queued-1 accepted", |m| {
        m.topic == s2 && m.json()["state"] == "accepted"
    })
    .await;

    // Cancel the queued one: canceled without ever running.
    c.publish(&format!("{P}/{dev}/job/queued-1/cancel"), "", None)
        .await;
    let r = c
        .wait_for(Duration::from_secs(10), "queued-1 result", |m| {
            m.topic == reply && m.json()["id"] == "queued-1"
        })
        .await
        .json();
    assert_eq!(r["state"], "canceled");
    assert_eq!(r["error"]["code"], "canceled");
    assert!(
        !c.on(&s2).iter().any(|s| s["state"] == "running"),
        "queued job never ran"
    );

    // Cancel the running one: canceled, with the tokens so far. The `decode` status
    // comes as decoding starts; give it time for a first token on a loaded CI box.
    c.pump(Duration::from_millis(300)).await;
    c.publish(&format!("{P}/{dev}/job/run-1/cancel"), "", None)
        .await;
    let r = c
        .wait_for(Duration::from_secs(30), "run-1 result", |m| {
            m.topic == reply && m.json()["id"] == "run-1"
        })
        .await
        .json();
    assert_eq!(r["state"], "canceled", "{r}");
    assert_eq!(r["finish_reason"], "canceled");
    let n = r["tokens"]["generated"].as_u64().unwrap();
    assert!(
        (1..2000).contains(&n),
        "stopped early with tokens so far: {n}"
    );

    // And the daemon goes on.
    c.submit_job(P, dev, job("after-cancel", 2), reply, b"after")
        .await;
    let r = c
        .wait_for(Duration::from_secs(60), "after-cancel result", |m| {
            m.topic == reply && m.json()["id"] == "after-cancel"
        })
        .await
        .json();
    assert_eq!(r["state"], "succeeded");
    daemon.stop().await.unwrap();
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_each_gets_its_code_and_the_daemon_keeps_serving() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let dev = "badinput";
    let mut cfg = daemon_config(&broker.url(), dev, state.path());
    cfg.limits.max_prompt_bytes = 4096;
    cfg.limits.max_payload_bytes = 16 * 1024;
    cfg.limits.max_json_depth = 16;
    cfg.models.memory_budget_mib = Some(400);
    let daemon = InProcessDaemon::start(cfg);
    let reply = "test/reply/bad";
    let mut c = Client::connect(&broker.url(), &[&format!("{P}/{dev}/#"), reply], false).await;
    wait_online(&mut c, P, dev).await;

    // A finished job whose id a different payload will try to reuse.
    c.submit_job(P, dev, job("dup-1", 2), reply, b"dup-original")
        .await;
    c.wait_for(Duration::from_secs(60), "dup-1 result", |m| {
        m.is_reply(reply, b"dup-original")
    })
    .await;

    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    let big_prompt = "x".repeat(5000);
    let huge = format!(
        r#"{{"id":"huge","model":"{MODEL}","prompt":"{}"}}"#,
        "y".repeat(20_000)
    );
    let cases: Vec<(&str, Vec<u8>, &str, bool)> = vec![
        // (name, payload, expected code, carries a usable id)
        ("invalid_json", br#"{"id": "x", "model":"#.to_vec(), "invalid_json", false),
        ("non_utf8", b"{\"id\":\"\xff\xfe\"}".to_vec(), "not_utf8", false),
        ("not_object", b"[1, 2, 3]".to_vec(), "not_an_object", false),
        ("missing_id", json!({"model": MODEL, "prompt": "hi"}).to_string().into_bytes(), "missing_id", false),
        ("invalid_id", json!({"id": "a b/c", "model": MODEL, "prompt": "hi"}).to_string().into_bytes(), "invalid_id", false),
        ("duplicate_id", json!({"id": "dup-1", "model": MODEL, "prompt": "another prompt"}).to_string().into_bytes(), "duplicate_id", true),
        ("unknown_field", json!({"id": "bad-uf", "model": MODEL, "prompt": "hi", "temprature": 1}).to_string().into_bytes(), "unknown_field", true),
        ("wrong_type", json!({"id": "bad-wt", "model": MODEL, "prompt": "hi", "max_tokens": "8"}).to_string().into_bytes(), "wrong_type", true),
        ("temperature_range", json!({"id": "bad-temp", "model": MODEL, "prompt": "hi", "temperature": 9}).to_string().into_bytes(), "out_of_range", true),
        ("max_tokens_range", json!({"id": "bad-mt", "model": MODEL, "prompt": "hi", "max_tokens": 0}).to_string().into_bytes(), "out_of_range", true),
        ("threads_range", json!({"id": "bad-thr", "model": MODEL, "prompt": "hi", "threads": 100000}).to_string().into_bytes(), "out_of_range", true),
        ("both_prompts", json!({"id": "bad-both", "model": MODEL, "prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}).to_string().into_bytes(), "prompt_and_messages", true),
        ("no_prompt", json!({"id": "bad-none", "model": MODEL}).to_string().into_bytes(), "no_prompt", true),
        ("prompt_too_large", json!({"id": "bad-big", "model": MODEL, "prompt": big_prompt}).to_string().into_bytes(), "prompt_too_large", true),
        ("payload_too_large", huge.into_bytes(), "payload_too_large", false),
        ("unknown_model", json!({"id": "bad-model", "model": "no-such-model", "prompt": "hi"}).to_string().into_bytes(), "model_not_found", true),
        ("model_path", json!({"id": "bad-path", "model": "../models/x", "prompt": "hi"}).to_string().into_bytes(), "invalid_model_name", true),
        ("admission", json!({"id": "bad-adm", "model": MODEL, "prompt": "hi", "n_ctx": 131072, "max_tokens": 4}).to_string().into_bytes(), "admission_refused", true),
        ("too_deep", deep.into_bytes(), "json_too_deep", false),
    ];

    for (i, (name, payload, _, _)) in cases.iter().enumerate() {
        c.submit_job(P, dev, payload.clone(), reply, name.as_bytes())
            .await;
        // A valid job in between: the daemon keeps serving.
        if i % 4 == 3 {
            let id = format!("good-{i}");
            c.submit_job(P, dev, job(&id, 2), reply, id.as_bytes())
                .await;
        }
    }
    let good = "good-last";
    c.submit_job(P, dev, job(good, 2), reply, good.as_bytes())
        .await;

    for (name, _, code, with_id) in &cases {
        let m = c
            .wait_for(
                Duration::from_secs(120),
                &format!("rejection of {name}"),
                |m| m.is_reply(reply, name.as_bytes()),
            )
            .await;
        let r = m.json();
        assert_eq!(r["state"], "rejected", "{name}: {r}");
        assert_eq!(r["error"]["code"], *code, "{name}: {r}");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(!msg.is_empty(), "{name}: message");
        if *with_id && *name != "duplicate_id" {
            let id = r["id"].as_str().unwrap();
            // Also on the job's own status topic.
            let st = c.on(&format!("{P}/{dev}/job/{id}/status"));
            assert!(
                st.iter()
                    .any(|s| s["state"] == "rejected" && s["error"]["code"] == *code),
                "{name}: status"
            );
        }
    }
    // Messages name the field.
    let by = |name: &str| {
        c.msgs
            .iter()
            .find(|m| m.is_reply(reply, name.as_bytes()))
            .unwrap()
            .json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(by("unknown_field").contains("'temprature'"));
    assert!(by("wrong_type").contains("'max_tokens'"));
    assert!(by("temperature_range").contains("'temperature'"));
    assert!(by("threads_range").contains("'threads'"));
    assert!(by("model_path").contains("'model'"));
    // No-id rejections also land on PREFIX/DEV/errors.
    let errors = c.on(&format!("{P}/{dev}/errors"));
    for code in [
        "invalid_json",
        "not_utf8",
        "not_an_object",
        "missing_id",
        "invalid_id",
        "payload_too_large",
        "json_too_deep",
        "duplicate_id",
    ] {
        assert!(
            errors.iter().any(|e| e["error"]["code"] == code),
            "errors topic lacks {code}"
        );
    }
    // Every valid job in between succeeded.
    for id in ["good-3", "good-7", "good-11", "good-15", "good-last"] {
        let r = c
            .wait_reply(Duration::from_secs(120), id, reply, id.as_bytes())
            .await;
        assert_eq!(r["state"], "succeeded", "{id}: {r}");
    }
    // The original dup-1 was not overwritten: resubmitting it exactly is answered
    // from the store, not run again.
    c.submit_job(P, dev, job("dup-1", 2), reply, b"dup-again")
        .await;
    let again = c
        .wait_reply(
            Duration::from_secs(30),
            "dup-1 answered again",
            reply,
            b"dup-again",
        )
        .await;
    assert_eq!(again["state"], "succeeded");
    let runs = c
        .on(&format!("{P}/{dev}/job/dup-1/status"))
        .iter()
        .filter(|s| s["state"] == "running" && s["phase"] == "load")
        .count();
    assert_eq!(runs, 1, "dup-1 ran once");
    daemon.stop().await.unwrap();
    c.close().await;
}
