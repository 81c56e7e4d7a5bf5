//! A deadline timer kept for the life of a connection.
//!
//! Each request on a connection has its own deadline (the header read timeout of the next head,
//! the per-try timeout of the next upstream exchange), and deadlines mostly move forward. A new
//! `tokio::time::Sleep` per request registers and cancels a timer-wheel entry every time; this
//! one stays registered at whatever deadline it has. When it fires before the deadline it is
//! checked against (it was set for an earlier request) it is moved to that deadline; when a
//! deadline comes earlier than the one it is set for, it is moved in. A busy connection thus
//! touches the wheel about once per timeout period, and a wait registers the task's waker only
//! when the task changed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::time::{Instant, Sleep};

#[derive(Default)]
pub struct KeptTimer {
    sleep: Option<Pin<Box<Sleep>>>,
    /// The waker the sleep was last polled with: a task's waker stays the same, so while it
    /// has not changed and the sleep has not fired there is nothing to poll.
    waker: Option<Waker>,
}

impl KeptTimer {
    /// Ready once `deadline` has passed; otherwise the task is woken when it does (or earlier,
    /// harmlessly, when an older deadline fires).
    pub fn poll_until(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
            self.waker = None;
        }
        loop {
            if !sleep.is_elapsed() && self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return Poll::Pending;
            }
            // With the task's budget used up, `Sleep` answers `Pending` without registering
            // anything; only a poll made with budget left is known to have registered the waker.
            let registers = tokio::task::coop::has_budget_remaining();
            match sleep.as_mut().poll(cx) {
                Poll::Pending => {
                    self.waker = registers.then(|| cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(()) if sleep.deadline() >= deadline => return Poll::Ready(()),
                Poll::Ready(()) => {
                    sleep.as_mut().reset(deadline);
                    self.waker = None;
                }
            }
        }
    }

    /// Let go of the last waiting task's waker (it keeps that task's memory alive), for a
    /// connection going idle. The sleep re-registers on its next wait.
    pub fn forget_waker(&mut self) {
        self.waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;

    #[tokio::test]
    async fn fires_at_each_requests_own_deadline() {
        let mut timer = KeptTimer::default();
        let d1 = Instant::now() + Duration::from_millis(20);
        poll_fn(|cx| timer.poll_until(d1, cx)).await;
        assert!(Instant::now() >= d1);
        // Still set at the passed deadline: a later request waits for its own.
        let d2 = Instant::now() + Duration::from_millis(40);
        poll_fn(|cx| timer.poll_until(d2, cx)).await;
        assert!(Instant::now() >= d2, "fired at an earlier request's deadline");
        // Set far out (and registered), then a nearer deadline moves it in.
        let far = Instant::now() + Duration::from_secs(30);
        assert!(poll_fn(|cx| Poll::Ready(timer.poll_until(far, cx))).await.is_pending());
        assert!(poll_fn(|cx| Poll::Ready(timer.poll_until(far, cx))).await.is_pending(), "a second wait");
        let near = Instant::now() + Duration::from_millis(20);
        tokio::time::timeout(Duration::from_secs(10), poll_fn(|cx| timer.poll_until(near, cx)))
            .await
            .expect("the nearer deadline fired");
        assert!(Instant::now() >= near);
    }

    #[tokio::test]
    async fn a_wait_begun_out_of_budget_still_fires() {
        // The first wait happens with the task's cooperative budget used up: the sleep cannot
        // register then, and the timer must not act as if it had.
        let mut timer = KeptTimer::default();
        let deadline = Instant::now() + Duration::from_millis(30);
        let mut first = true;
        tokio::time::timeout(
            Duration::from_secs(10),
            poll_fn(|cx| {
                if std::mem::take(&mut first) {
                    loop {
                        let mut spend = std::pin::pin!(tokio::task::coop::consume_budget());
                        if spend.as_mut().poll(cx).is_pending() {
                            break;
                        }
                    }
                    assert!(!tokio::task::coop::has_budget_remaining());
                }
                timer.poll_until(deadline, cx)
            }),
        )
        .await
        .expect("the deadline fired although the first wait had no budget");
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test]
    async fn a_registered_wait_is_woken_when_the_deadline_passes() {
        // The second poll skips the sleep (same waker, not fired); the task must still be woken.
        let mut timer = KeptTimer::default();
        let deadline = Instant::now() + Duration::from_millis(30);
        let mut polls = 0;
        tokio::time::timeout(
            Duration::from_secs(10),
            poll_fn(|cx| {
                polls += 1;
                timer.poll_until(deadline, cx)
            }),
        )
        .await
        .expect("woken at the deadline");
        assert!(Instant::now() >= deadline);
        assert!(polls >= 2, "it was ready at once");
    }
}
