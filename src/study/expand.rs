//! The plan's configurations: the Cartesian product of `[axes]`, plus each
//! `[[include]]` (its own product, axes it leaves out taken from `[axes]`), minus
//! every configuration an `[[exclude]]` matches on all the keys it names. Pure.

use std::collections::BTreeSet;

use super::config::Configuration;
use super::plan::{invalid, AxisValues, Plan, PlanError, DEFAULT_N_CTX};

/// Every configuration of the plan, in a stable order (axes' product order, then
/// includes), without duplicates.
pub fn expand(plan: &Plan) -> Result<Vec<Configuration>, PlanError> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut add = |c: Configuration| {
        if seen.insert(c.clone()) {
            out.push(c);
        }
    };
    product(&plan.axes, &plan.axes)
        .into_iter()
        .for_each(&mut add);
    for inc in &plan.include {
        product(inc, &plan.axes).into_iter().for_each(&mut add);
    }
    out.retain(|c| !plan.exclude.iter().any(|e| matches(e, c)));
    if out.is_empty() {
        return Err(PlanError::NoConfiguration);
    }
    for c in &out {
        let need = c.depth + c.prompt_tokens + c.gen_tokens;
        if need > c.n_ctx {
            return Err(invalid(
                "axes.n_ctx",
                c.n_ctx,
                format!(
                    "at least depth + prompt_tokens + gen_tokens = {} + {} + {} = {need} \
                     (model '{}' on '{}')",
                    c.depth, c.prompt_tokens, c.gen_tokens, c.model, c.device
                ),
            ));
        }
    }
    Ok(out)
}

/// `values` of one axis: the table's own, else `[axes]`', else the default.
fn pick<T: Clone>(own: &Option<Vec<T>>, axes: &Option<Vec<T>>, default: Vec<T>) -> Vec<T> {
    own.clone().or_else(|| axes.clone()).unwrap_or(default)
}

fn product(t: &AxisValues, axes: &AxisValues) -> Vec<Configuration> {
    let opt = |v: Vec<u32>| -> Vec<Option<u32>> { v.into_iter().map(Some).collect() };
    let devices = pick(&t.device, &axes.device, Vec::new());
    let models = pick(&t.model, &axes.model, Vec::new());
    let threads = t
        .threads
        .clone()
        .or_else(|| axes.threads.clone())
        .map(opt)
        .unwrap_or_else(|| vec![None]);
    let prompts = pick(&t.prompt_tokens, &axes.prompt_tokens, Vec::new());
    let gens = pick(&t.gen_tokens, &axes.gen_tokens, Vec::new());
    let depths = pick(&t.depth, &axes.depth, vec![0]);
    let ctxs = pick(&t.n_ctx, &axes.n_ctx, vec![DEFAULT_N_CTX]);
    let batches = t
        .batch
        .clone()
        .or_else(|| axes.batch.clone())
        .map(opt)
        .unwrap_or_else(|| vec![None]);
    let ngls = pick(&t.n_gpu_layers, &axes.n_gpu_layers, vec![0]);
    let modes: Vec<Option<String>> = t
        .power_mode
        .clone()
        .or_else(|| axes.power_mode.clone())
        .map(|v| v.into_iter().map(Some).collect())
        .unwrap_or_else(|| vec![None]);

    let mut out = Vec::new();
    for device in &devices {
        for model in &models {
            for &threads in &threads {
                for &prompt_tokens in &prompts {
                    for &gen_tokens in &gens {
                        for &depth in &depths {
                            for &n_ctx in &ctxs {
                                for &batch in &batches {
                                    for &n_gpu_layers in &ngls {
                                        for power_mode in &modes {
                                            out.push(Configuration {
                                                device: device.clone(),
                                                model: model.clone(),
                                                threads,
                                                prompt_tokens,
                                                gen_tokens,
                                                depth,
                                                n_ctx,
                                                batch,
                                                n_gpu_layers,
                                                power_mode: power_mode.clone(),
                                                quality: None,
                                            });
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Whether an exclude table matches: every key it names holds the configuration's value.
fn matches(e: &AxisValues, c: &Configuration) -> bool {
    fn has<T: PartialEq>(list: &Option<Vec<T>>, v: &T) -> bool {
        list.as_ref().is_none_or(|l| l.contains(v))
    }
    fn has_opt<T: PartialEq>(list: &Option<Vec<T>>, v: &Option<T>) -> bool {
        match (list, v) {
            (None, _) => true,
            (Some(l), Some(v)) => l.contains(v),
            (Some(_), None) => false,
        }
    }
    has(&e.device, &c.device)
        && has(&e.model, &c.model)
        && has_opt(&e.threads, &c.threads)
        && has(&e.prompt_tokens, &c.prompt_tokens)
        && has(&e.gen_tokens, &c.gen_tokens)
        && has(&e.depth, &c.depth)
        && has(&e.n_ctx, &c.n_ctx)
        && has_opt(&e.batch, &c.batch)
        && has(&e.n_gpu_layers, &c.n_gpu_layers)
        && has_opt(&e.power_mode, &c.power_mode)
}

#[cfg(test)]
mod tests {
    use super::super::plan::parse;
    use super::*;

    const PLAN: &str = r#"
[study]
name = "t"
[axes]
device = ["a", "b"]
model = ["m1", "m2"]
threads = [1, 2]
prompt_tokens = [32, 128]
gen_tokens = [32]
n_ctx = [512]
[[include]]
device = ["b"]
n_gpu_layers = [99]
[[exclude]]
model = ["m2"]
threads = [1]
"#;

    #[test]
    fn product_plus_includes_minus_excludes_without_duplicates() {
        let cfgs = expand(&parse(PLAN).unwrap()).unwrap();
        // axes: 2 devices × 2 models × 2 threads × 2 prompts = 16, minus m2/threads 1
        // (2 devices × 2 prompts = 4) = 12; include: b × 2 × 2 × 2 with ngl 99 = 8, minus
        // its m2/threads 1 (2) = 6.
        assert_eq!(cfgs.len(), 18);
        assert!(cfgs
            .iter()
            .all(|c| !(c.model == "m2" && c.threads == Some(1))));
        assert_eq!(cfgs.iter().filter(|c| c.n_gpu_layers == 99).count(), 6);
        assert!(cfgs
            .iter()
            .filter(|c| c.n_gpu_layers == 99)
            .all(|c| c.device == "b"));
        let hashes: BTreeSet<_> = cfgs.iter().map(Configuration::hash).collect();
        assert_eq!(hashes.len(), cfgs.len());
        // The stable order: the first is the product's first.
        assert_eq!(cfgs[0].device, "a");
        assert_eq!(cfgs[0].model, "m1");
        assert_eq!(cfgs[0].threads, Some(1));
        assert_eq!(cfgs[0].prompt_tokens, 32);
    }

    #[test]
    fn an_include_that_repeats_the_axes_adds_nothing() {
        let text = PLAN.replace("n_gpu_layers = [99]", "n_gpu_layers = [0]");
        assert_eq!(expand(&parse(&text).unwrap()).unwrap().len(), 12);
    }

    #[test]
    fn everything_excluded_and_a_context_too_small_are_errors() {
        let all = PLAN.replace("model = [\"m2\"]\nthreads = [1]", "device = [\"a\", \"b\"]");
        assert_eq!(
            expand(&parse(&all).unwrap()).unwrap_err(),
            PlanError::NoConfiguration
        );
        let small = PLAN.replace("n_ctx = [512]", "n_ctx = [128]");
        let e = expand(&parse(&small).unwrap()).unwrap_err();
        assert!(e.to_string().contains("axes.n_ctx"), "{e}");
        assert!(e.to_string().contains("'128'"), "{e}");
    }

    #[test]
    fn unset_axes_take_their_defaults() {
        let text = "[study]\nname = \"t\"\n[axes]\ndevice = [\"local\"]\nmodel = [\"m\"]\n\
                    prompt_tokens = [8]\ngen_tokens = [8]\n";
        let cfgs = expand(&parse(text).unwrap()).unwrap();
        assert_eq!(cfgs.len(), 1);
        let c = &cfgs[0];
        assert_eq!(
            (c.threads, c.depth, c.n_ctx, c.batch),
            (None, 0, DEFAULT_N_CTX, None)
        );
        assert_eq!((c.n_gpu_layers, c.power_mode.clone()), (0, None));
    }

    #[test]
    fn configurations_differing_only_by_power_mode_are_distinct() {
        let text = "[study]\nname = \"t\"\n[axes]\ndevice = [\"local\"]\nmodel = [\"m\"]\n\
                    prompt_tokens = [8]\ngen_tokens = [8]\npower_mode = [\"eco\", \"maxn\"]\n";
        let cfgs = expand(&parse(text).unwrap()).unwrap();
        assert_eq!(cfgs.len(), 2);
        assert_eq!(cfgs[0].power_mode.as_deref(), Some("eco"));
        assert_eq!(cfgs[1].power_mode.as_deref(), Some("maxn"));
        assert_ne!(cfgs[0].hash(), cfgs[1].hash());
        // And each one's job names its mode.
        let plan = parse(text).unwrap();
        let job = crate::study::job::payload("j", &cfgs[1], &plan, 0);
        assert_eq!(job["power_mode"], "maxn");
    }
}
