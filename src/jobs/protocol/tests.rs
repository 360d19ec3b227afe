use super::*;
use proptest::prelude::*;

use crate::infer::PromptInput;

fn parse(s: &str) -> Result<Job, Rejected> {
    parse_job(
        s.as_bytes(),
        &Limits::default(),
        &GenerateOptions::default(),
    )
}

fn code(s: &str) -> &'static str {
    parse(s).unwrap_err().error.code()
}

#[test]
fn a_full_job_parses() {
    let j = parse(
        r#"{"id":"j-1","model":"m","prompt":"hi","max_tokens":8,"temperature":0.5,
            "stop":["\n"],"seed":3,"threads":1,"stream":true,"trace":"full","n_ctx":256}"#,
    )
    .unwrap();
    assert_eq!(j.id, "j-1");
    assert_eq!(j.request.options.max_tokens, 8);
    assert_eq!(j.request.options.stop, vec!["\n".to_string()]);
    assert_eq!(j.request.options.n_ctx, 256);
    assert_eq!(j.stream, Some(true));
    assert_eq!(j.trace, TraceLevel::Full);
    let j = parse(r#"{"id":"a","model":"m","messages":[{"role":"user","content":"x"}]}"#).unwrap();
    assert!(matches!(j.request.input, PromptInput::Messages(ref m) if m.len() == 1));
}

#[test]
fn each_bad_input_has_its_code_and_names_the_field() {
    assert_eq!(code("{"), "invalid_json");
    assert_eq!(
        parse_job(b"\xff\xfe", &Limits::default(), &GenerateOptions::default())
            .unwrap_err()
            .error
            .code(),
        "not_utf8"
    );
    assert_eq!(code("[1]"), "not_an_object");
    assert_eq!(code(r#"{"model":"m"}"#), "missing_id");
    assert_eq!(code(r#"{"id":"a b","model":"m"}"#), "invalid_id");
    assert_eq!(code(r#"{"id":7}"#), "invalid_id");
    let e = parse(r#"{"id":"a","model":"m","prompt":"x","temprature":1}"#).unwrap_err();
    assert_eq!(e.error.code(), "unknown_field");
    assert_eq!(e.id.as_deref(), Some("a"));
    assert!(e.error.to_string().contains("'temprature'"));
    let e = parse(r#"{"id":"a","model":"m","prompt":"x","max_tokens":"8"}"#).unwrap_err();
    assert_eq!(e.error.code(), "wrong_type");
    assert!(e.error.to_string().contains("'max_tokens'"), "{}", e.error);
    let e = parse(r#"{"id":"a","model":"m","prompt":"x","max_tokens":0}"#).unwrap_err();
    assert_eq!(e.error.code(), "out_of_range");
    assert!(e.error.to_string().contains("'max_tokens'"));
    assert_eq!(
        code(r#"{"id":"a","model":"m","prompt":"x","max_tokens":300,"n_ctx":256}"#),
        "out_of_range"
    );
    assert_eq!(
        code(r#"{"id":"a","model":"m","prompt":"x","temperature":5.5}"#),
        "out_of_range"
    );
    assert_eq!(
        code(r#"{"id":"a","model":"m","prompt":"x","threads":100000}"#),
        "out_of_range"
    );
    assert_eq!(
        code(r#"{"id":"a","model":"m","prompt":"x","threads":0}"#),
        "out_of_range"
    );
    assert_eq!(
        code(r#"{"id":"a","model":"m","prompt":"x","messages":[]}"#),
        "prompt_and_messages"
    );
    assert_eq!(code(r#"{"id":"a","model":"m"}"#), "no_prompt");
    assert_eq!(
        code(r#"{"id":"a","model":"../etc/passwd","prompt":"x"}"#),
        "invalid_model_name"
    );
    assert_eq!(
        code(r#"{"id":"a","model":"a/b","prompt":"x"}"#),
        "invalid_model_name"
    );
    assert_eq!(code(r#"{"id":"a","prompt":"x"}"#), "missing_field");
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert_eq!(code(&deep), "json_too_deep");
    let limits = Limits {
        max_prompt_bytes: 4,
        ..Limits::default()
    };
    let e = parse_job(
        br#"{"id":"a","model":"m","prompt":"hello"}"#,
        &limits,
        &GenerateOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.error.code(), "prompt_too_large");
    let limits = Limits {
        max_payload_bytes: 10,
        ..Limits::default()
    };
    let e = parse_job(
        br#"{"id":"a","model":"m","prompt":"hello"}"#,
        &limits,
        &GenerateOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.error.code(), "payload_too_large");
}

#[test]
fn prompt_tokens_and_depth_parse_and_are_checked() {
    let j = parse(r#"{"id":"a","model":"m","prompt_tokens":32,"depth":64,"n_ctx":256}"#).unwrap();
    assert_eq!(j.request.input, PromptInput::PromptTokens(32));
    assert_eq!(j.request.options.depth, 64);
    let e = parse(r#"{"id":"a","model":"m","prompt_tokens":8,"prompt":"x"}"#).unwrap_err();
    assert_eq!(e.error.code(), "prompt_tokens_exclusive");
    assert!(e.error.to_string().contains("'prompt'"), "{}", e.error);
    let m =
        r#"{"id":"a","model":"m","prompt_tokens":8,"messages":[{"role":"user","content":"x"}]}"#;
    assert_eq!(code(m), "prompt_tokens_exclusive");
    assert_eq!(
        code(r#"{"id":"a","model":"m","prompt_tokens":0}"#),
        "out_of_range"
    );
    let e =
        parse(r#"{"id":"a","model":"m","prompt_tokens":200,"depth":100,"n_ctx":256}"#).unwrap_err();
    assert_eq!(e.error.code(), "out_of_range");
    assert!(
        e.error.to_string().contains("'prompt_tokens'"),
        "{}",
        e.error
    );
    assert_eq!(
        code(r#"{"id":"a","model":"m","prompt":"x","depth":256,"n_ctx":256}"#),
        "out_of_range"
    );
    assert_eq!(
        code(r#"{"id":"a","model":"m","prompt_tokens":"8"}"#),
        "wrong_type"
    );
}

#[test]
fn depth_scan_ignores_brackets_in_strings() {
    let s = format!(r#"{{"id":"a","model":"m","prompt":"{}"}}"#, "[".repeat(200));
    assert!(parse(&s).is_ok());
    let s = r#"{"id":"a","model":"m","prompt":"\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}"#;
    assert!(parse(s).is_ok());
}

#[test]
fn topics() {
    let t = Topics::new("edgewatt", "pi5");
    assert_eq!(t.job("x", "status"), "edgewatt/pi5/job/x/status");
    assert_eq!(t.cancel_id("edgewatt/pi5/job/x/cancel"), Some("x"));
    assert_eq!(t.cancel_id("edgewatt/pi5/job/x/status"), None);
    assert_eq!(t.fleet_share("g"), "$share/g/edgewatt/jobs");
    assert!(valid_topic_level("pi5"));
    assert!(!valid_topic_level("a/b"));
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        prop::sample::select(JOB_FIELDS.to_vec()).prop_map(String::from),
                        "[a-z_]{1,8}"
                    ],
                    inner
                ),
                0..8
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Cases for the default (quick) run.
const QUICK_CASES: u32 = 2_000;

/// Cases for the long run (`make fuzz`: `--ignored`, EDGEWATT_FUZZ_CASES, default 10^6).
fn long_cases() -> u32 {
    std::env::var("EDGEWATT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn check_bytes(bytes: &[u8]) {
    let _ = parse_job(bytes, &Limits::default(), &GenerateOptions::default());
    let _ = peek_id(bytes);
}

fn check_json(v: Value, with_id: bool) -> Result<(), TestCaseError> {
    let mut v = v;
    if with_id {
        if let Value::Object(m) = &mut v {
            m.insert("id".into(), Value::from("fuzz-1"));
        }
    }
    let bytes = serde_json::to_vec(&v).unwrap();
    match parse_job(&bytes, &Limits::default(), &GenerateOptions::default()) {
        Ok(job) => prop_assert!(job.request.options.max_tokens >= 1),
        Err(r) => prop_assert!(!r.error.code().is_empty() && !r.error.to_string().is_empty()),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: QUICK_CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the parser.
    #[test]
    fn parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_bytes(&bytes);
    }

    /// Structured JSON aimed at the job fields never panics, and errors carry codes.
    #[test]
    fn parser_never_panics_on_json(v in json_value(), with_id in any::<bool>()) {
        check_json(v, with_id)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: long_cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// The long run over bytes (`make fuzz`).
    #[test]
    #[ignore = "long: 10^6 cases; run with `make fuzz`"]
    fn fuzz_parser_bytes_long(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_bytes(&bytes);
    }

    /// The long run over structured JSON (`make fuzz`).
    #[test]
    #[ignore = "long: 10^6 cases; run with `make fuzz`"]
    fn fuzz_parser_json_long(v in json_value(), with_id in any::<bool>()) {
        check_json(v, with_id)?;
    }
}

#[test]
fn power_mode_is_a_mode_name() {
    let j = parse(r#"{"id":"a","model":"m","prompt":"x","power_mode":"eco"}"#).unwrap();
    assert_eq!(j.power_mode.as_deref(), Some("eco"));
    assert_eq!(
        parse(r#"{"id":"a","model":"m","prompt":"x"}"#)
            .unwrap()
            .power_mode,
        None
    );
    // Quality jobs run under a mode too.
    let q = parse(r#"{"id":"a","model":"m","kind":"perplexity","power_mode":"maxn"}"#).unwrap();
    assert_eq!(q.power_mode.as_deref(), Some("maxn"));
    assert_eq!(
        code(r#"{"id":"a","model":"m","prompt":"x","power_mode":3}"#),
        "wrong_type"
    );
    let e = parse(r#"{"id":"a","model":"m","prompt":"x","power_mode":"a/b"}"#).unwrap_err();
    assert_eq!(e.error.code(), "out_of_range");
    assert!(e.error.to_string().contains("'power_mode'") && e.error.to_string().contains("'a/b'"));
}
