//! Accounting: every answer the submitter received, per job id, and the report
//! table built from it.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::plan::{JobPlan, Kind};

/// One answer: its state and error code.
#[derive(Debug, Clone)]
pub struct Answer {
    pub state: String,
    pub code: Option<String>,
    /// The payload, to tell a redelivered copy from a second, different answer.
    pub payload: Vec<u8>,
}

/// Answers per job id.
#[derive(Default)]
pub struct Tally {
    pub answers: HashMap<String, Vec<Answer>>,
}

impl Tally {
    /// Records a reply (a result or a payload error) carrying `id` as Correlation Data.
    pub fn record(&mut self, id: &str, body: &Value, payload: &[u8]) {
        let state = body["state"].as_str().unwrap_or("?").to_string();
        let code = body["error"]["code"].as_str().map(str::to_string);
        self.answers
            .entry(id.to_string())
            .or_default()
            .push(Answer {
                state,
                code,
                payload: payload.to_vec(),
            });
    }
}

/// The outcome counts of a run.
#[derive(Debug, Default)]
pub struct Outcome {
    pub submitted: usize,
    pub once_ok: usize,
    pub once_code: usize,
    /// Answered more than once with different answers (the job ran or ended twice).
    pub twice: usize,
    /// The same answer delivered more than once (a QoS 1 copy published again after a
    /// broker restart; the consumer dedupes it by job id).
    pub redelivered: usize,
    pub lost: usize,
    /// An answer that is not `succeeded` and carries no error code.
    pub no_code: usize,
    /// Per kind: (submitted, succeeded, canceled, failed/rejected with a code).
    pub by_kind: BTreeMap<Kind, [usize; 4]>,
    /// Error codes seen, with counts.
    pub codes: BTreeMap<String, usize>,
    pub lost_ids: Vec<String>,
    pub twice_ids: Vec<String>,
    pub redelivered_ids: Vec<String>,
}

pub fn outcome(jobs: &[JobPlan], t: &Tally) -> Outcome {
    let mut o = Outcome {
        submitted: jobs.len(),
        ..Outcome::default()
    };
    for j in jobs {
        let row = o.by_kind.entry(j.kind).or_default();
        row[0] += 1;
        let a = t.answers.get(&j.id).map(Vec::as_slice).unwrap_or(&[]);
        match a.len() {
            0 => {
                o.lost += 1;
                o.lost_ids.push(j.id.clone());
                continue;
            }
            1 => {}
            _ if a.iter().all(|x| x.payload == a[0].payload) => {
                o.redelivered += 1;
                o.redelivered_ids.push(j.id.clone());
            }
            _ => {
                o.twice += 1;
                o.twice_ids.push(j.id.clone());
            }
        }
        let once = a.len() == 1 || !o.twice_ids.contains(&j.id);
        let first = &a[0];
        match (first.state.as_str(), &first.code) {
            ("succeeded", _) => {
                row[1] += 1;
                if once {
                    o.once_ok += 1;
                }
            }
            (_, Some(code)) => {
                if first.state == "canceled" {
                    row[2] += 1;
                } else {
                    row[3] += 1;
                }
                *o.codes.entry(code.clone()).or_default() += 1;
                if once {
                    o.once_code += 1;
                }
            }
            (_, None) => o.no_code += 1,
        }
    }
    o
}
