//! Delivery: one worker per channel works through that channel's queue
//! (`alert_deliveries` rows with status `pending`), oldest first, while this
//! instance leads. A failed attempt that may succeed later (timeout,
//! connection refused, 5xx, 429) is retried after an exponential backoff
//! with ±20% jitter — or after the receiver's `Retry-After` — until the
//! retry horizon; then, or at once on a permanent error, the row becomes a
//! dead letter. A delivered row is never sent again, so a retry cannot
//! duplicate a notification that already arrived.

use std::{sync::Arc, time::Duration};

use super::{
    channel::{DeliveryError, Notification},
    config::DeliveryConfig,
    engine::Engine,
    store::Delivery,
};
use crate::plugin::now_us;

/// The delay before attempt `attempts + 1`, jittered by `unit` in [0, 1).
pub fn backoff(config: &DeliveryConfig, attempts: u32, unit: f64) -> Duration {
    let base = config.initial_backoff.0.as_secs_f64() * 2f64.powi(attempts.min(30) as i32);
    let capped = base.min(config.max_backoff.0.as_secs_f64());
    Duration::from_secs_f64(capped * (0.8 + 0.4 * unit))
}

/// A cheap, non-cryptographic jitter source (splitmix64 of the clock).
fn jitter_unit() -> f64 {
    let mut z = (now_us() as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// What to do with a delivery after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Delivered,
    RetryAt(i64),
    Dead(String),
}

/// Decides the fate of a delivery after an attempt that ended with `result`.
pub fn next(config: &DeliveryConfig, d: &Delivery, result: &Result<(), DeliveryError>, now: i64) -> Next {
    match result {
        Ok(()) => Next::Delivered,
        Err(DeliveryError::Permanent { reason }) => Next::Dead(format!("permanent error: {reason}")),
        Err(DeliveryError::Retry { reason, after }) => {
            let wait = after.unwrap_or_else(|| backoff(config, d.attempts.max(0) as u32, jitter_unit()));
            let at = now + wait.as_micros() as i64;
            if at > d.created_at_us + config.horizon.as_us() {
                Next::Dead(format!(
                    "gave up after {} attempts over the {} retry horizon: {reason}",
                    d.attempts + 1,
                    config.horizon
                ))
            } else {
                Next::RetryAt(at)
            }
        }
    }
}

/// The worker of one channel (index into `engine.channels`).
pub async fn worker(engine: Arc<Engine>, index: usize) {
    let handle = &engine.channels[index];
    let name = handle.config.name.clone();
    let config = engine.config.delivery.clone();
    let idle = Duration::from_millis(250).min(engine.interval());
    loop {
        // Registered before looking at the queue, so a notification queued
        // meanwhile still wakes us.
        let queued = engine.queued.notified();
        tokio::pin!(queued);
        queued.as_mut().enable();
        if !engine.leading() {
            tokio::select! { _ = &mut queued => {}, _ = tokio::time::sleep(engine.interval()) => {} }
            continue;
        }
        let now = now_us();
        let due = match engine.store.due(&name, now, 32).await {
            Ok(d) => d,
            Err(e) => {
                engine.logger.warn(&format!("alert channel '{name}': cannot read its queue: {e}"));
                tokio::time::sleep(engine.interval()).await;
                continue;
            }
        };
        if let Ok(depth) = engine.store.pending_count(&name).await {
            engine.metrics.queue_depth.with_label_values(&[&name]).set(depth);
        }
        if due.is_empty() {
            tokio::select! { _ = &mut queued => {}, _ = tokio::time::sleep(idle) => {} }
            continue;
        }
        for d in due {
            if !engine.leading() {
                break;
            }
            let result = match serde_json::from_str::<Notification>(&d.payload) {
                Ok(n) => match tokio::time::timeout(config.timeout.0, handle.channel.deliver(&n)).await {
                    Ok(r) => r,
                    Err(_) => Err(DeliveryError::retry(format!("no answer within {}", config.timeout))),
                },
                Err(e) => Err(DeliveryError::permanent(format!("stored notification unreadable: {e}"))),
            };
            let now = now_us();
            let (status, at, error, outcome) = match next(&config, &d, &result, now) {
                Next::Delivered => ("delivered", now, None, "delivered"),
                Next::RetryAt(at) => ("pending", at, result.as_ref().err().map(ToString::to_string), "retry"),
                Next::Dead(why) => ("dead", now, Some(why), "dead"),
            };
            engine.metrics.notifications.with_label_values(&[&name, outcome]).inc();
            match outcome {
                "dead" => {
                    engine.metrics.dead_letters.with_label_values(&[&name]).inc();
                    engine.logger.error(&format!(
                        "alert channel '{name}': notification {} is a dead letter: {}",
                        d.notification_id,
                        error.as_deref().unwrap_or("")
                    ));
                }
                "retry" => engine.logger.warn(&format!(
                    "alert channel '{name}': notification {} not delivered (attempt {}), retrying: {}",
                    d.notification_id,
                    d.attempts + 1,
                    error.as_deref().unwrap_or("")
                )),
                _ => {}
            }
            if let Err(e) = engine.store.attempted(&d, status, at, error.as_deref(), now).await {
                engine.logger.error(&format!(
                    "alert channel '{name}': cannot record the attempt on {}: {e}",
                    d.notification_id
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::config::Dur;

    fn delivery(attempts: i64, created: i64) -> Delivery {
        Delivery {
            notification_id: "n".into(),
            channel: "c".into(),
            status: "pending".into(),
            attempts,
            created_at_us: created,
            next_attempt_at_us: created,
            finished_at_us: None,
            last_error: None,
            payload: String::new(),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let c = DeliveryConfig {
            initial_backoff: Dur::secs(1),
            max_backoff: Dur::secs(60),
            ..Default::default()
        };
        assert_eq!(backoff(&c, 0, 0.5), Duration::from_secs(1));
        assert_eq!(backoff(&c, 3, 0.5), Duration::from_secs(8));
        assert_eq!(backoff(&c, 20, 0.5), Duration::from_secs(60));
        assert_eq!(backoff(&c, 0, 0.0), Duration::from_millis(800));
        assert!(backoff(&c, 0, 0.999) < Duration::from_millis(1200));
    }

    #[test]
    fn retries_until_the_horizon_then_dead_letter() {
        let c = DeliveryConfig { horizon: Dur::secs(10), ..Default::default() };
        let d = delivery(0, 0);
        assert_eq!(next(&c, &d, &Ok(()), 5), Next::Delivered);
        let retry = Err(DeliveryError::Retry { reason: "503".into(), after: Some(Duration::from_secs(2)) });
        assert_eq!(next(&c, &d, &retry, 1_000_000), Next::RetryAt(3_000_000), "Retry-After is honoured");
        match next(&c, &delivery(4, 0), &retry, 9_000_000) {
            Next::Dead(why) => {
                assert!(why.contains("gave up after 5 attempts over the 10s retry horizon: 503"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        let permanent = Err(DeliveryError::permanent("400 Bad Request: no text"));
        assert_eq!(
            next(&c, &d, &permanent, 0),
            Next::Dead("permanent error: 400 Bad Request: no text".into())
        );
    }
}
