//! Synthetic traces for the trace tests: known waveforms sampled at jittered times,
//! with dropped samples, and engine markers at chosen instants.
#![allow(dead_code)]

use edgewatt::clock::ClockAnchor;
use edgewatt::infer::events::FinishReason;
use edgewatt::power::{RailInfo, Sample};
use edgewatt::trace::{Marker, MarkerKind, Trace};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// 10 s into the monotonic clock: realistic, and lets the idle window fit before.
pub const T0_NS: u64 = 10_000_000_000;
pub const MS: u64 = 1_000_000;

/// A power waveform with a closed-form integral. Times are seconds since `T0_NS`.
#[derive(Debug, Clone, Copy)]
pub enum Wave {
    Constant {
        w: f64,
    },
    /// `w0 + slope_w_per_s · t`.
    Ramp {
        w0: f64,
        slope_w_per_s: f64,
    },
    /// `mean_w + amp_w · sin(2π f t)`.
    Sine {
        mean_w: f64,
        amp_w: f64,
        hz: f64,
    },
    /// `high_w` for the first half of each period, `low_w` for the second.
    Square {
        low_w: f64,
        high_w: f64,
        period_s: f64,
    },
}

impl Wave {
    pub fn power_w(&self, t: f64) -> f64 {
        match *self {
            Wave::Constant { w } => w,
            Wave::Ramp { w0, slope_w_per_s } => w0 + slope_w_per_s * t,
            Wave::Sine { mean_w, amp_w, hz } => {
                mean_w + amp_w * (2.0 * std::f64::consts::PI * hz * t).sin()
            }
            Wave::Square {
                low_w,
                high_w,
                period_s,
            } => {
                if (t / period_s).rem_euclid(1.0) < 0.5 {
                    high_w
                } else {
                    low_w
                }
            }
        }
    }

    /// ∫_a^b p dt in J (a, b in s since T0).
    pub fn energy_j(&self, a: f64, b: f64) -> f64 {
        match *self {
            Wave::Constant { w } => w * (b - a),
            Wave::Ramp { w0, slope_w_per_s } => {
                w0 * (b - a) + slope_w_per_s / 2.0 * (b * b - a * a)
            }
            Wave::Sine { mean_w, amp_w, hz } => {
                let om = 2.0 * std::f64::consts::PI * hz;
                mean_w * (b - a) - amp_w / om * ((om * b).cos() - (om * a).cos())
            }
            Wave::Square { period_s, .. } => {
                // Split at every half-period edge; constant in between.
                let half = period_s / 2.0;
                let mut e = 0.0;
                let mut t = a;
                while t < b {
                    let next = (((t / half).floor() + 1.0) * half).min(b);
                    e += self.power_w((t + next) / 2.0) * (next - t);
                    t = next;
                }
                e
            }
        }
    }
}

pub fn ns_to_s(t_ns: u64) -> f64 {
    (t_ns as f64 - T0_NS as f64) * 1e-9
}

/// How samples are taken.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    pub period_ns: u64,
    /// Each sample is moved by up to ± this fraction of the period.
    pub jitter: f64,
    /// Probability that a sample is lost.
    pub drop: f64,
    pub seed: u64,
}

impl Sampling {
    pub fn regular(period_ns: u64) -> Self {
        Sampling {
            period_ns,
            jitter: 0.0,
            drop: 0.0,
            seed: 1,
        }
    }
}

/// Samples `wave` (as a function of absolute t_ns) on `rail` from `from_ns` to `to_ns`.
pub fn sample_fn(
    f: impl Fn(u64) -> f64,
    rail: u16,
    from_ns: u64,
    to_ns: u64,
    s: Sampling,
) -> Vec<Sample> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed);
    let mut out = Vec::new();
    let mut i = 0u64;
    loop {
        let nominal = from_ns + i * s.period_ns;
        if nominal > to_ns {
            break;
        }
        i += 1;
        let j = if s.jitter > 0.0 {
            rng.gen_range(-s.jitter..s.jitter) * s.period_ns as f64
        } else {
            0.0
        };
        let dropped = s.drop > 0.0 && rng.gen_bool(s.drop);
        if dropped {
            continue;
        }
        let t = (nominal as f64 + j).max(0.0) as u64;
        let w = f(t);
        let power_uw = (w * 1e6).round() as i64;
        out.push(Sample {
            t_before_ns: t - 20_000,
            t_after_ns: t + 20_000,
            rail,
            bus_mv: 5_000,
            current_ua: power_uw / 5,
            power_uw,
        });
    }
    out
}

pub fn sample_wave(wave: Wave, rail: u16, from_ns: u64, to_ns: u64, s: Sampling) -> Vec<Sample> {
    sample_fn(|t| wave.power_w(ns_to_s(t)), rail, from_ns, to_ns, s)
}

pub fn rail(name: &str, total: bool) -> RailInfo {
    RailInfo {
        name: name.into(),
        total,
        source: "sim:ina219".into(),
        simulated: true,
    }
}

pub fn anchor() -> ClockAnchor {
    ClockAnchor {
        monotonic_ns: T0_NS,
        unix_ns: 1_763_900_000_000_000_000,
    }
}

pub fn m(t_ns: u64, kind: MarkerKind) -> Marker {
    Marker { t_ns, kind }
}

/// Phase boundaries of a one-repetition job.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub load_start: u64,
    pub load_end: u64,
    pub prefill_start: u64,
    pub prefill_end: u64,
    pub done: u64,
    pub tokens: u32,
}

impl Job {
    pub fn markers(&self) -> Vec<Marker> {
        let mut v = vec![
            m(self.load_start, MarkerKind::LoadStart),
            m(self.load_end, MarkerKind::LoadEnd { cached: false }),
            m(
                self.prefill_start,
                MarkerKind::PrefillStart { prompt_tokens: 16 },
            ),
            m(self.prefill_end, MarkerKind::PrefillEnd),
        ];
        let span = self.done - self.prefill_end;
        for i in 0..self.tokens {
            let t = self.prefill_end + span * u64::from(i + 1) / u64::from(self.tokens + 1);
            v.push(m(t, MarkerKind::Token { index: i }));
        }
        v.push(m(
            self.done,
            MarkerKind::Done {
                finish_reason: FinishReason::Length,
            },
        ));
        v
    }

    /// A job from T0 + 2 s: load 0.8 s, gap, prefill 0.3 s, decode 2 s; odd
    /// offsets so markers fall between samples.
    pub fn typical() -> Self {
        let s = T0_NS + 2_000 * MS;
        Job {
            load_start: s + 123_457,
            load_end: s + 800 * MS + 333_333,
            prefill_start: s + 810 * MS + 777_777,
            prefill_end: s + 1_110 * MS + 414_141,
            done: s + 3_110 * MS + 909_090,
            tokens: 40,
        }
    }
}

pub fn trace_with(rails: Vec<RailInfo>, samples: Vec<Sample>, markers: Vec<Marker>) -> Trace {
    let mut t = Trace::new("job-1", rails, anchor());
    t.model = Some("test-model".into());
    t.extend_samples(samples);
    t.markers = markers;
    t
}

/// |a − b| / |b|.
pub fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// A start tag: its name and attributes.
pub type Tag = (String, HashMap<String, String>);

/// Minimal XML well-formedness check: balanced tags, quoted attributes, known
/// entities. Returns the start tags with their attributes.
pub fn parse_xml(text: &str) -> Result<Vec<Tag>, String> {
    let mut stack: Vec<String> = Vec::new();
    let mut tags = Vec::new();
    let mut rest = text.trim_start();
    if let Some(r) = rest.strip_prefix("<?xml") {
        rest = &r[r.find("?>").ok_or("unclosed declaration")? + 2..];
    }
    let check_text = |t: &str| -> Result<(), String> {
        let mut s = t;
        while let Some(i) = s.find('&') {
            let end = s[i..].find(';').ok_or("bare '&'")?;
            let ent = &s[i + 1..i + end];
            let ok = matches!(ent, "amp" | "lt" | "gt" | "quot" | "apos") || ent.starts_with('#');
            if !ok {
                return Err(format!("unknown entity '&{ent};'"));
            }
            s = &s[i + end..];
        }
        if t.contains('<') {
            return Err("'<' in text".into());
        }
        Ok(())
    };
    while !rest.is_empty() {
        let lt = rest.find('<').unwrap_or(rest.len());
        check_text(&rest[..lt])?;
        rest = &rest[lt..];
        if rest.is_empty() {
            break;
        }
        if let Some(r) = rest.strip_prefix("<!--") {
            rest = &r[r.find("-->").ok_or("unclosed comment")? + 3..];
            continue;
        }
        let gt = rest.find('>').ok_or("unclosed tag")?;
        let inner = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = inner.strip_prefix('/') {
            let open = stack.pop().ok_or("close without open")?;
            if open != name.trim() {
                return Err(format!("'</{}>' closes '<{open}>'", name.trim()));
            }
            continue;
        }
        let self_closing = inner.ends_with('/');
        let inner = inner.trim_end_matches('/');
        let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
        let name = inner[..name_end].to_string();
        let mut attrs = HashMap::new();
        let mut a = inner[name_end..].trim();
        while !a.is_empty() {
            let eq = a
                .find('=')
                .ok_or(format!("attribute without value in <{name}>"))?;
            let key = a[..eq].trim().to_string();
            let v = a[eq + 1..].trim_start();
            let q = v.chars().next().ok_or("missing value")?;
            if q != '"' && q != '\'' {
                return Err(format!("unquoted attribute '{key}' in <{name}>"));
            }
            let close = v[1..].find(q).ok_or("unclosed attribute")?;
            let val = &v[1..1 + close];
            check_text(val)?;
            attrs.insert(key, val.to_string());
            a = v[close + 2..].trim_start();
        }
        tags.push((name.clone(), attrs));
        if !self_closing {
            stack.push(name);
        }
    }
    if let Some(open) = stack.pop() {
        return Err(format!("'<{open}>' never closed"));
    }
    Ok(tags)
}

/// Trapezoids over `[a, b)` of CSV points, interpolating at the ends; written
/// separately from the library on purpose.
pub fn integrate_csv(points: &[(u64, f64)], a: u64, b: u64) -> f64 {
    let mut e = 0.0;
    for w in points.windows(2) {
        let ((t0, p0), (t1, p1)) = (w[0], w[1]);
        let lo = t0.max(a);
        let hi = t1.min(b);
        if hi <= lo {
            continue;
        }
        let at = |t: u64| p0 + (p1 - p0) * (t - t0) as f64 / (t1 - t0) as f64;
        e += (at(lo) + at(hi)) / 2.0 * (hi - lo) as f64 * 1e-9;
    }
    e
}
