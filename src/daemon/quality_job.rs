//! Quality jobs in the daemon: the text is resolved in `[quality] texts_dir` (on the
//! blocking pool: it reads files), then the engine scores it; the runner measures,
//! journals and publishes the report like any job's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::infer::{EngineError, EventObserver, RunReport};
use crate::jobs::protocol::Job;
use crate::quality::{self, QualityRequest};

/// The engine call for a job: generation, or scoring for a quality job.
pub fn run_engine(
    ctx: &Arc<Ctx>,
    job: &Job,
    observer: Box<dyn EventObserver>,
    cancel: CancellationToken,
) -> Pin<Box<dyn Future<Output = Result<RunReport, EngineError>> + Send>> {
    let engine = ctx.engine.clone();
    let Some(spec) = job.quality.clone() else {
        let req = job.request.clone();
        return Box::pin(async move { engine.generate(req, observer, cancel).await });
    };
    let dir = ctx.settings.texts_dir.clone();
    let r = &job.request;
    let (model, threads, keep_alive_s) = (r.model.clone(), r.options.threads, r.keep_alive_s);
    Box::pin(async move {
        let name = spec.text.clone();
        let text = tokio::task::spawn_blocking(move || quality::text::resolve(&dir, &name))
            .await
            .map_err(|e| EngineError::Panicked(e.to_string()))??;
        let req = QualityRequest {
            kind: spec.kind,
            model,
            reference: spec.reference,
            text: Arc::new(text),
            n_ctx: spec.n_ctx,
            max_chunks: spec.max_chunks,
            threads,
            keep_alive_s,
        };
        engine.quality(req, observer, cancel).await
    })
}
