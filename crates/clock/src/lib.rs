//! The `Clock`: the one source of time for everything endstate does on a
//! schedule — token buckets, retries with backoff, lease expiry, waits for
//! instances to run.
//!
//! Four clocks share one trait:
//! - [`SystemClock`], wall time, for production;
//! - [`ScaledClock`], wall time sped up by a factor, so that a benchmark can
//!   converge thousands of instances under EC2's rate limits in minutes and
//!   still report its figures in EC2 seconds (the built-in cloud will share
//!   the same factor);
//! - [`ManualClock`], which moves only when a test advances it;
//! - [`TokioClock`], which follows tokio's timer, so tests on a paused
//!   runtime drive it with their sleeps.
//!
//! This crate is not a scheduler: it answers "what time is it" and "wake me
//! after this long", nothing more.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// The future returned by [`Clock::sleep`]; boxed so the trait stays object-safe.
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The source of time. Share it as [`SharedClock`].
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since the Unix epoch, in this clock's time (EC2 seconds for a
    /// scaled clock).
    fn now(&self) -> Duration;

    /// Sleeps for `duration` of this clock's time.
    fn sleep(&self, duration: Duration) -> Sleep<'_>;
}

/// A clock shared between tasks.
pub type SharedClock = Arc<dyn Clock>;

/// Wall time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    /// A shared wall clock.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

fn wall_now() -> Duration {
    // A system clock before 1970 is a broken machine; report the epoch rather
    // than panic.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        wall_now()
    }

    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// Wall time sped up by `factor`: one real second is `factor` clock seconds.
/// The clock starts at the wall time of its creation.
#[derive(Debug, Clone)]
pub struct ScaledClock {
    factor: f64,
    origin_wall: Duration,
    origin_real: std::time::Instant,
}

impl ScaledClock {
    /// A clock running `factor` times faster than wall time. `factor` must be
    /// positive and finite; anything else is treated as 1.
    pub fn new(factor: f64) -> Self {
        let factor = if factor.is_finite() && factor > 0.0 {
            factor
        } else {
            1.0
        };
        Self {
            factor,
            origin_wall: wall_now(),
            origin_real: std::time::Instant::now(),
        }
    }

    /// The speed-up factor.
    pub fn factor(&self) -> f64 {
        self.factor
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Duration {
        self.origin_wall + self.origin_real.elapsed().mul_f64(self.factor)
    }

    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        Box::pin(tokio::time::sleep(duration.div_f64(self.factor)))
    }
}

/// Wall time as tokio's timer sees it: it starts at the wall time of its
/// creation and then advances with `tokio::time::Instant`, so under a paused
/// tokio runtime (`#[tokio::test(start_paused = true)]`) it moves exactly as
/// far as the test's sleeps and `advance` calls take it.
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin_wall: Duration,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock standing at the current wall time. Must be called inside a
    /// tokio runtime.
    pub fn new() -> Self {
        Self {
            origin_wall: wall_now(),
            origin: tokio::time::Instant::now(),
        }
    }

    /// A shared one.
    pub fn shared() -> SharedClock {
        Arc::new(Self::new())
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.origin_wall + self.origin.elapsed()
    }

    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when told to. Sleepers wake when [`ManualClock::advance`]
/// moves the time past their deadline.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug, Default)]
struct ManualInner {
    now: Mutex<Duration>,
    moved: Notify,
}

impl ManualClock {
    /// A clock standing at `start` since the epoch.
    pub fn new(start: Duration) -> Self {
        let clock = Self::default();
        *clock.lock() = start;
        clock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Duration> {
        // The guarded value is a plain Duration: a panic while holding the
        // lock cannot leave it half-written, so poisoning is safe to ignore.
        self.inner
            .now
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves the clock forward by `by` and wakes every sleeper whose deadline passed.
    pub fn advance(&self, by: Duration) {
        *self.lock() += by;
        self.inner.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.lock()
    }

    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        let deadline = self.now() + duration;
        Box::pin(async move {
            loop {
                let moved = self.inner.moved.notified();
                if self.now() >= deadline {
                    return;
                }
                moved.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_past_their_deadline() {
        let clock = ManualClock::new(Duration::from_secs(100));
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move {
                clock.sleep(Duration::from_secs(10)).await;
                clock.now()
            })
        };
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(5));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(5));
        let woke_at = sleeper.await.expect("sleeper task");
        assert_eq!(woke_at, Duration::from_secs(110));
    }

    #[tokio::test(start_paused = true)]
    async fn scaled_clock_sleeps_a_fraction_of_real_time() {
        let clock = ScaledClock::new(100.0);
        let started = tokio::time::Instant::now();
        clock.sleep(Duration::from_secs(50)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }
}
