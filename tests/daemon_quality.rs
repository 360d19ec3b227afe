//! Quality jobs through the daemon over a real Mosquitto with the real model:
//! a perplexity job measured like any job (phases, energy per scored token), bad
//! quality input rejected with its code, and cancel mid-way → `canceled` with the
//! chunks done.
//!
//! `cargo test --release --test daemon_quality`

mod daemon_support;

use std::time::Duration;

use daemon_support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perplexity_job_bad_input_and_cancel() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let dev = "quality";
    let daemon = InProcessDaemon::start(daemon_config(&broker.url(), dev, state.path()));
    let reply = "test/reply/quality";
    let mut c = Client::connect(&broker.url(), &[&format!("{P}/{dev}/#"), reply], false).await;
    wait_online(&mut c, P, dev).await;
    let result = |id: &'static str| move |m: &Msg| m.topic == reply && m.json()["id"] == id;

    let job = json!({"id": "ppl-1", "model": MODEL, "kind": "perplexity", "text": "licenses",
                     "n_ctx": 64, "max_chunks": 2, "trace": "summary"});
    c.submit_job(P, dev, job.to_string(), reply, b"ppl-1").await;
    let r = c
        .wait_for(Duration::from_secs(180), "ppl-1 result", result("ppl-1"))
        .await
        .json();
    assert_eq!(r["state"], "succeeded", "{r}");
    assert_eq!(r["kind"], "perplexity");
    let q = &r["quality"];
    assert_eq!(q["chunks"], 2);
    assert_eq!(q["tokens_scored"], 62);
    assert!(q["ppl"].as_f64().unwrap() > 1.0, "{q}");
    assert_eq!(q["text"], "licenses");
    let per_token = q["energy_j_per_scored_token"]["total"].as_f64().unwrap();
    assert!(per_token > 0.0, "{q}");
    assert!(
        q["energy_j_per_scored_token"]["rails"]["5V_IN"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        r["energy"]["energy_j"]["prefill"].as_f64().unwrap() > 0.0,
        "eval phase energy"
    );
    assert!(r["model"]["requantized_from"].is_null());
    let phases: Vec<String> = c
        .on(&format!("{P}/{dev}/job/ppl-1/status"))
        .iter()
        .filter_map(|s| s["phase"].as_str().map(str::to_string))
        .collect();
    assert_eq!(phases, ["load", "prefill"], "statuses: {phases:?}");

    // Bad input: at intake (field check) and at run time (text resolution).
    let bad = json!({"id": "bad-1", "model": MODEL, "kind": "perplexity", "prompt": "x"});
    c.submit_job(P, dev, bad.to_string(), reply, b"bad-1").await;
    let r = c
        .wait_for(Duration::from_secs(30), "bad-1", result("bad-1"))
        .await
        .json();
    assert_eq!(
        (r["state"].as_str(), r["error"]["code"].as_str()),
        (Some("rejected"), Some("field_not_for_kind")),
        "{r}"
    );
    let bad = json!({"id": "bad-2", "model": MODEL, "kind": "perplexity", "text": "no-such-text"});
    c.submit_job(P, dev, bad.to_string(), reply, b"bad-2").await;
    let r = c
        .wait_for(Duration::from_secs(60), "bad-2", result("bad-2"))
        .await
        .json();
    assert_eq!(
        (r["state"].as_str(), r["error"]["code"].as_str()),
        (Some("rejected"), Some("text_not_found")),
        "{r}"
    );
    let bad = json!({"id": "bad-3", "model": MODEL, "kind": "perplexity", "n_ctx": 9000});
    c.submit_job(P, dev, bad.to_string(), reply, b"bad-3").await;
    let r = c
        .wait_for(Duration::from_secs(60), "bad-3", result("bad-3"))
        .await
        .json();
    assert_eq!(
        (r["state"].as_str(), r["error"]["code"].as_str()),
        (Some("rejected"), Some("invalid_n_ctx")),
        "{r}"
    );

    // Cancel mid-way: the result is canceled and holds the chunks done.
    let long = json!({"id": "ppl-long", "model": MODEL, "kind": "perplexity", "n_ctx": 64, "max_chunks": 400});
    c.submit_job(P, dev, long.to_string(), reply, b"ppl-long")
        .await;
    let st = format!("{P}/{dev}/job/ppl-long/status");
    c.wait_for(Duration::from_secs(60), "ppl-long evaluating", |m| {
        m.topic == st && m.json()["phase"] == "prefill"
    })
    .await;
    c.pump(Duration::from_secs(4)).await;
    c.publish(&format!("{P}/{dev}/job/ppl-long/cancel"), "", None)
        .await;
    let r = c
        .wait_for(
            Duration::from_secs(60),
            "ppl-long result",
            result("ppl-long"),
        )
        .await
        .json();
    assert_eq!(r["state"], "canceled", "{r}");
    assert_eq!(r["finish_reason"], "canceled");
    let done = r["quality"]["chunks"].as_u64().unwrap();
    assert!((1..400).contains(&done), "chunks done: {done}");
    daemon.stop().await.unwrap();
    c.close().await;
}
