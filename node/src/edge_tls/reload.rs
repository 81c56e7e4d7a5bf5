//! Hot reload of the certificate directory: polled every `--https-reload-ms`, and at once on
//! SIGHUP.
//!
//! The directory is compared with the fingerprint of the last set that loaded *successfully*.
//! While they differ, every tick tries again: a file caught half-written fails this tick and
//! loads at the next one, even if nothing else changes. A failure keeps the previous set in
//! service; it is logged at error level and counted once per distinct error (a retry that fails
//! the same way is logged at debug level), and `meridian_tls_reload_failing` stays 1 until the
//! directory loads again or goes back to what is served.
//!
//! Established connections never notice a reload: their handshake is done, and the certificate
//! they were given lives in their own `Arc`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::load::{self, Fingerprint};
use super::EdgeTls;

/// What the reload task remembers between ticks.
#[derive(Debug, Default)]
pub struct Reloader {
    /// Fingerprint of the set being served.
    last_ok: Fingerprint,
    /// The error of the last failed attempt, until one succeeds.
    last_failure: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The directory is what is being served.
    Unchanged,
    /// A new set is being served.
    Loaded { pairs: usize },
    /// The directory changed but could not be loaded; `first` unless the previous attempt
    /// failed with the same error.
    Failed { error: String, first: bool },
}

impl Reloader {
    /// Start from the set loaded at start-up.
    pub fn new(loaded: Fingerprint) -> Reloader {
        Reloader { last_ok: loaded, last_failure: None }
    }

    /// One tick: reload if the directory differs from what is served (or `force`, for SIGHUP).
    /// Blocking file-system work: run it off the async workers.
    pub fn check(&mut self, tls: &EdgeTls, force: bool) -> Outcome {
        let now = match load::fingerprint(tls.dir()) {
            Ok(fp) => fp,
            Err(e) => return self.failed(tls, e.to_string(), force),
        };
        if now == self.last_ok && !force {
            if self.last_failure.take().is_some() {
                tls.stats.reload_recovered();
            }
            return Outcome::Unchanged;
        }
        match load::load_dir(tls.dir()) {
            Ok(loaded) => {
                let pairs = loaded.pairs.len();
                tls.install(loaded.pairs);
                self.last_ok = loaded.fingerprint;
                self.last_failure = None;
                tls.stats.reload_ok();
                Outcome::Loaded { pairs }
            }
            Err(e) => self.failed(tls, e.to_string(), force),
        }
    }

    fn failed(&mut self, tls: &EdgeTls, error: String, force: bool) -> Outcome {
        let first = force || self.last_failure.as_deref() != Some(error.as_str());
        tls.stats.reload_failed(first);
        self.last_failure = Some(error.clone());
        Outcome::Failed { error, first }
    }
}

/// The reload task: until `stop`, check every `every` and whenever `hup` is notified.
pub async fn run(
    tls: Arc<EdgeTls>,
    mut reloader: Reloader,
    every: Duration,
    hup: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; start-up has just loaded the directory.
    tick.tick().await;
    loop {
        let force = tokio::select! {
            _ = tick.tick() => false,
            _ = hup.notified() => true,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let task_tls = tls.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let outcome = reloader.check(&task_tls, force);
            (reloader, outcome)
        })
        .await;
        let outcome = match checked {
            Ok((r, outcome)) => {
                reloader = r;
                outcome
            }
            Err(e) => {
                // Nothing in a check should panic; if it did, start over: the next tick
                // compares against nothing and reloads.
                tracing::error!(error = %e, "HTTPS certificate check failed unexpectedly");
                reloader = Reloader::default();
                continue;
            }
        };
        let dir = tls.dir().display();
        match outcome {
            Outcome::Unchanged => {}
            Outcome::Loaded { pairs } => {
                tracing::info!(%dir, pairs, "HTTPS certificates reloaded; new handshakes use them")
            }
            Outcome::Failed { error, first: true } => tracing::error!(
                %dir,
                %error,
                "HTTPS certificate reload failed; still serving the previous certificates"
            ),
            Outcome::Failed { error, first: false } => {
                tracing::debug!(%dir, %error, "HTTPS certificate reload still failing")
            }
        }
    }
}
