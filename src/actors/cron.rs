//! Cron Triggers: `scheduled(controller, env, ctx)` events on the schedule a
//! worker was deployed with (`"crons": ["*/5 * * * *"]`).
//!
//! One [`CronScheduler`] actor per node ticks every second and, when a new UTC
//! minute begins, runs every published worker's crons that match that minute,
//! each as one event through the worker's deployment (its isolates, its limits).
//! The minute the node starts in is not run (a previous process may have run it);
//! runs are at most once per node and minute. Expressions are the standard five
//! fields (minute hour day-of-month month day-of-week, with ranges, steps, lists
//! and names), parsed by the `croner` crate.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, SubsecRound, Timelike, Utc};
use croner::Cron;

use super::deployment::{next_request_id, Deployment};
use super::registry::WorkersView;
use crate::js::InvokeRequest;

pub(crate) const CRON_RUNS: &str = "edged_cron_runs_total";

/// Parses a cron expression as deploy accepts it; the error says why not.
pub fn parse(expression: &str) -> Result<Cron, String> {
    let fields = expression.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "cron expression '{expression}' must have 5 fields (minute hour day-of-month month day-of-week), it has {fields}"
        ));
    }
    Cron::new(expression)
        .parse()
        .map_err(|e| format!("cron expression '{expression}' is invalid: {e}"))
}

/// Runs one scheduled event on `deployment` now, as if `cron` fired at
/// `scheduled_ms` (ms since the epoch). `Err` is the handler's exception.
pub async fn run_scheduled(
    deployment: &Deployment,
    cron: &str,
    scheduled_ms: i64,
) -> Result<(), String> {
    let request = InvokeRequest {
        cf: None,
        method: "SCHEDULED".into(),
        url: format!("scheduled:{scheduled_ms}:{cron}"),
        headers: Vec::new(),
        body: None,
        depth: 0,
        entrypoint: None,
        props: None,
        cancel: Default::default(),
    };
    let request_id = next_request_id();
    let outcome = deployment
        .invoke(request_id, request)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let worker = deployment.name().to_owned();
    let label = if outcome.is_ok() { "ok" } else { "exception" };
    metrics::counter!(CRON_RUNS, "worker" => worker.clone(), "outcome" => label).increment(1);
    match &outcome {
        Ok(()) => tracing::info!(worker, request_id, cron, "scheduled event ran"),
        Err(e) => tracing::error!(worker, request_id, cron, "scheduled event failed: {e}"),
    }
    outcome
}

pub struct CronScheduler {
    view: WorkersView,
    /// In a cluster, each (worker, minute, trigger) fires on the one node
    /// that claims it in the engine first; none fires while the engine is
    /// unreachable (at most once).
    cluster: Option<crate::cluster::Cluster>,
    last_minute: Option<DateTime<Utc>>,
    parsed: HashMap<String, Option<Cron>>,
}

impl CronScheduler {
    pub fn new(view: WorkersView) -> Self {
        CronScheduler {
            view,
            cluster: None,
            last_minute: None,
            parsed: HashMap::new(),
        }
    }

    pub fn with_cluster(mut self, cluster: Option<crate::cluster::Cluster>) -> Self {
        self.cluster = cluster;
        self
    }

    fn tick(&mut self) {
        let now = Utc::now().trunc_subsecs(0);
        let Some(minute) = now.with_second(0) else {
            return;
        };
        let previous = self.last_minute.replace(minute);
        if previous.is_none_or(|p| p >= minute) {
            return;
        }
        let published = self.view.current();
        for deployment in published.workers.values() {
            for (index, expression) in deployment.script.crons.iter().enumerate() {
                let cron = self
                    .parsed
                    .entry(expression.clone())
                    .or_insert_with(|| parse(expression).ok());
                let due = cron
                    .as_ref()
                    .is_some_and(|c| c.is_time_matching(&minute).unwrap_or(false));
                if due {
                    let deployment = deployment.clone();
                    let expression = expression.clone();
                    let at = minute.timestamp_millis();
                    let cluster = self.cluster.clone();
                    actix::spawn(async move {
                        if let Some(cluster) = cluster {
                            let key =
                                format!("c.{}.{}.{index}", deployment.name(), minute.timestamp());
                            if !cluster.claim_once(key).await {
                                return;
                            }
                        }
                        let _ = run_scheduled(&deployment, &expression, at).await;
                    });
                }
            }
        }
    }
}

impl Actor for CronScheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick();
        ctx.run_interval(Duration::from_secs(1), |act, _| act.tick());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn expressions_parse_and_match() {
        let every5 = parse("*/5 * * * *").expect("parses");
        let at = |h, m| {
            Utc.with_ymd_and_hms(2026, 11, 27, h, m, 0)
                .single()
                .expect("time")
        };
        assert!(every5.is_time_matching(&at(10, 15)).expect("match"));
        assert!(!every5.is_time_matching(&at(10, 16)).expect("match"));
        let weekdays = parse("30 9 * * MON-FRI").expect("parses");
        // 2026-11-27 is a Friday.
        assert!(weekdays.is_time_matching(&at(9, 30)).expect("match"));
        for bad in ["* * * *", "61 * * * *", "*/5 * * * * *", "x * * * *", ""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
