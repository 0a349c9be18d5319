//! Shared pieces of endstate's benchmark programs (`src/programs/*`, run
//! as `bench NAME [ARGS…]`): each
//! program measures one thing, prints its figures as a table and as one
//! JSON line, and stops by itself. Not a test harness and not used by
//! endstate itself.
//!
//! [`serve`]: the real `endstate serve` over a built-in cloud, for the
//! programs that run it.

pub mod serve;

use std::time::Duration;

/// A program's arguments as `std::env::args()` gives a program of its own:
/// `bench NAME ARGS…` yields `NAME ARGS…`, so that argument 1 is the
/// program's first.
pub fn program_args() -> impl Iterator<Item = String> {
    std::env::args().skip(1)
}

/// The program's argument `index` (1: its first) as a number, `default`
/// when it is absent; an error names it as `name` when it is not a number.
pub fn number_arg<T>(index: usize, name: &str, default: T) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    use anyhow::Context as _;
    program_args()
        .nth(index)
        .map(|a| {
            a.parse()
                .with_context(|| format!("{name}: {a:?} is not a number"))
        })
        .transpose()
        .map(|v| v.unwrap_or(default))
}

/// Refuses to go on without root: the process backend's instances are
/// isolated with namespaces.
pub fn require_root(program: &str) -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        anyhow::bail!(
            "{program} needs root: the process backend isolates instances with namespaces (run it with sudo)"
        )
    }
}

/// The median (the lower one of an even count) and the maximum of
/// `values`, sorting them; zeros when there are none.
pub fn p50_max(values: &mut [i128]) -> (i128, i128) {
    values.sort_unstable();
    let p50 = values
        .get((values.len().saturating_sub(1)) / 2)
        .copied()
        .unwrap_or(0);
    (p50, values.last().copied().unwrap_or(0))
}

/// Median of a sample, in milliseconds.
pub fn median_ms(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples
        .get(samples.len() / 2)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// The `p`-th percentile (0.0..=1.0, nearest rank) of `sorted`, in
/// milliseconds; 0 for no samples.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile_ms(&sorted, 0.5), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&sorted, 1.0), 100.0);
        assert_eq!(percentile_ms(&sorted[..1], 0.99), 1.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
