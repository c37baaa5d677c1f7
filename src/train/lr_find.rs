//! The learning-rate range test (fastai's `lr_find`): about a hundred batches with the rate
//! rising exponentially, the loss smoothed as it goes, stopped when it diverges; suggested rates
//! from the curve. The engine runs the batches and restores the model afterwards
//! (`engine/range_test.rs`); this module holds the schedule and the reading of the curve.

use super::metrics::Ema;
use serde::Serialize;

/// The rate of the first batch.
pub const START_LR: f64 = 1e-7;
/// The rate of the last batch.
pub const END_LR: f64 = 1.0;
/// Batches in a full test.
pub const STEPS: usize = 100;
/// Weight of the past in the exponential moving average of the loss (fastai's 0.98).
const BETA: f64 = 0.98;
/// The test stops once the smoothed loss exceeds this multiple of its minimum.
const DIVERGENCE: f64 = 4.0;

/// One batch of the test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LrPoint {
    pub lr: f64,
    pub loss: f32,
    /// Debiased exponential moving average of the loss so far.
    pub smoothed: f32,
}

/// Suggested rates read off the smoothed curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Suggestion {
    /// Where the loss falls fastest against log(rate).
    pub steepest: f64,
    /// fastai's `valley`: a third into the longest stretch of falling loss. The one adopted.
    pub valley: f64,
}

/// What a range test concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The loss fell clearly: the [`Suggestion`] is worth adopting.
    Suggested,
    /// The loss never fell clearly below where it started (a converged model, say, whose range
    /// test is noise): keep the current rate.
    NoClearDescent,
    /// Too few batches to read a curve.
    TooFewPoints,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Suggested => "a clear descent: the valley is suggested",
            Verdict::NoClearDescent => "no clear descent: keep the current rate",
            Verdict::TooFewPoints => "too few batches for a suggestion",
        })
    }
}

/// A finished range test, as the [`crate::train::Event::LrFind`] event carries it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LrFind {
    pub points: Vec<LrPoint>,
    /// Whether the curve supports a suggestion, and the verdict in words (`message`).
    pub verdict: Verdict,
    /// The verdict as the log and the chart say it.
    pub message: String,
    /// Set only with [`Verdict::Suggested`].
    pub suggestion: Option<Suggestion>,
    /// Whether the loss diverged before the last batch.
    pub diverged: bool,
    /// The rate adopted for the running phase, if any.
    pub adopted: Option<f64>,
    pub seconds: f64,
}

/// The rate of batch `i` of `n`: exponential from [`START_LR`] to [`END_LR`].
pub fn lr_at(i: usize, n: usize) -> f64 {
    let t = i as f64 / (n.max(2) - 1) as f64;
    START_LR * (END_LR / START_LR).powf(t)
}

/// Smooths losses as they come and tells when they diverge (never within the first tenth of
/// [`STEPS`]).
#[derive(Debug, Clone)]
pub struct Curve {
    pub points: Vec<LrPoint>,
    average: Ema,
    best: f32,
}

impl Default for Curve {
    fn default() -> Self {
        Self {
            points: Vec::new(),
            average: Ema::new(BETA),
            best: 0.0,
        }
    }
}

impl Curve {
    /// Adds the loss of a batch at rate `lr`; `true` when the test should stop (the smoothed
    /// loss is not finite or exceeds [`DIVERGENCE`] times its minimum).
    pub fn push(&mut self, lr: f64, loss: f32) -> bool {
        let smoothed = self.average.push(loss as f64) as f32;
        let n = self.points.len() + 1;
        self.points.push(LrPoint { lr, loss, smoothed });
        // Small batches make the first losses noisy; rates in the first tenth never diverge.
        let settled = n > STEPS / 10;
        if !smoothed.is_finite() || (settled && smoothed as f64 > DIVERGENCE * self.best as f64) {
            return true;
        }
        if n == 1 || smoothed < self.best {
            self.best = smoothed;
        }
        false
    }
}

/// The verdict on a curve and, when it fell clearly, the suggestions (see [`suggest`]).
pub fn read(points: &[LrPoint]) -> (Verdict, Option<Suggestion>) {
    match (suggest(points), considered(points).map(clear_descent)) {
        (Some(s), Some(true)) => (Verdict::Suggested, Some(s)),
        (Some(_), _) => (Verdict::NoClearDescent, None),
        (None, _) => (Verdict::TooFewPoints, None),
    }
}

/// The points a curve is read on: without its first tenth and last five, as fastai does; `None`
/// when fewer than three remain.
fn considered(points: &[LrPoint]) -> Option<&[LrPoint]> {
    let skip_start = points.len() / 10;
    let end = points.len().saturating_sub(5);
    points.get(skip_start..end).filter(|p| p.len() >= 3)
}

/// Fraction of the starting loss by which a later stretch must fall below it, at the least.
const CLEAR_DROP: f64 = 0.1;
/// How many standard errors (of a difference of two stretch means) the fall must exceed.
const CLEAR_SIGMAS: f64 = 3.0;

/// Whether the loss falls clearly below its start: the mean raw loss of the first fifth of the
/// points (rates too small to change the model, so their spread is the batches' noise) against
/// the lowest mean of any later stretch of the same length. The fall must exceed [`CLEAR_DROP`]
/// of the start and [`CLEAR_SIGMAS`] standard errors of the difference.
fn clear_descent(p: &[LrPoint]) -> bool {
    let k = (p.len() / 5).max(2);
    let mean = |w: &[LrPoint]| w.iter().map(|q| q.loss as f64).sum::<f64>() / w.len() as f64;
    let start = mean(&p[..k]);
    let var = p[..k]
        .iter()
        .map(|q| (q.loss as f64 - start).powi(2))
        .sum::<f64>()
        / (k - 1) as f64;
    let lowest = p[k..].windows(k).map(mean).fold(f64::INFINITY, f64::min);
    let margin = (CLEAR_DROP * start).max(CLEAR_SIGMAS * (2.0 * var / k as f64).sqrt());
    lowest.is_finite() && start - lowest > margin
}

/// The suggestions of a curve, skipping its first tenth and last five points as fastai does;
/// `None` when too few points remain.
pub fn suggest(points: &[LrPoint]) -> Option<Suggestion> {
    let p = considered(points)?;
    let steepest = p
        .windows(2)
        .map(|w| {
            let slope = (w[1].smoothed - w[0].smoothed) as f64 / (w[1].lr.ln() - w[0].lr.ln());
            (slope, w[0].lr)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))?
        .1;
    // fastai's valley: the longest decreasing subsequence of the loss, a third of the way in
    // (plus half a third).
    let n = p.len();
    let mut lengths = vec![1usize; n];
    let (mut start, mut end) = (0, 0);
    for i in 1..n {
        for j in 0..i {
            if p[i].smoothed < p[j].smoothed && lengths[i] < lengths[j] + 1 {
                lengths[i] = lengths[j] + 1;
            }
        }
        if lengths[end] < lengths[i] {
            end = i;
            start = end.saturating_sub(lengths[end]);
        }
    }
    let section = (end - start) as f64 / 3.0;
    let idx = start + section as usize + (section / 2.0) as usize;
    Some(Suggestion {
        steepest,
        valley: p[idx.min(n - 1)].lr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loss that falls between 1e-4 and 1e-2 and explodes past 1e-1.
    fn synthetic(lr: f64) -> f32 {
        let x = lr.log10();
        let fall = 1.0 / (1.0 + ((x + 3.0) * 3.0).exp());
        (0.5 + fall + if x > -1.0 { (x + 1.0) * 20.0 } else { 0.0 }) as f32
    }

    #[test]
    fn schedule_spans_the_range() {
        assert_eq!(lr_at(0, STEPS), START_LR);
        assert!((lr_at(STEPS - 1, STEPS) - END_LR).abs() < 1e-12);
        assert!((lr_at(50, 101) - 10f64.powf(-3.5)).abs() < 1e-12);
    }

    #[test]
    fn divergence_stops_the_test_and_the_suggestions_lie_in_the_fall() {
        let mut curve = Curve::default();
        let mut stopped = None;
        for i in 0..STEPS {
            if curve.push(lr_at(i, STEPS), synthetic(lr_at(i, STEPS))) {
                stopped = Some(i);
                break;
            }
        }
        let stopped = stopped.expect("the loss diverges");
        assert!(
            lr_at(stopped, STEPS) > 0.1,
            "stopped at {}",
            lr_at(stopped, STEPS)
        );
        let (verdict, s) = read(&curve.points);
        assert_eq!(verdict, Verdict::Suggested);
        let s = s.unwrap();
        assert!((1e-4..1e-2).contains(&s.steepest), "{s:?}");
        assert!((1e-5..1e-1).contains(&s.valley), "{s:?}");
    }

    #[test]
    fn a_short_curve_has_no_suggestion() {
        let mut curve = Curve::default();
        for i in 0..4 {
            curve.push(lr_at(i, STEPS), 1.0);
        }
        assert_eq!(suggest(&curve.points), None);
        assert_eq!(read(&curve.points), (Verdict::TooFewPoints, None));
    }

    /// A converged model's range test: batch noise around 0.035 (a batch in twelve a spike to
    /// 0.12), flat until the rate passes 1e-3, then rising to divergence, as Dog-Cat's
    /// fine-tuning after a warm-up does.
    fn noise(i: usize, lr: f64) -> f32 {
        // A fixed pseudo-random sequence (a linear congruential generator) for the noise.
        let r = ((i as u64)
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
            >> 33) as f64
            / (1u64 << 31) as f64;
        let base = if i % 12 == 7 { 0.12 } else { 0.02 + 0.03 * r };
        let rise = if lr > 1e-3 {
            (lr / 1e-3).ln() * 0.2
        } else {
            0.0
        };
        (base + rise) as f32
    }

    #[test]
    fn a_flat_noisy_curve_has_no_clear_descent() {
        let mut curve = Curve::default();
        for i in 0..STEPS {
            if curve.push(lr_at(i, STEPS), noise(i, lr_at(i, STEPS))) {
                break;
            }
        }
        assert!(curve.points.len() > 30, "{} points", curve.points.len());
        // fastai's reading alone still names a valley in the noise...
        assert!(suggest(&curve.points).is_some());
        // ...which the verdict refuses.
        assert_eq!(read(&curve.points), (Verdict::NoClearDescent, None));
        assert_eq!(
            Verdict::NoClearDescent.to_string(),
            "no clear descent: keep the current rate"
        );
    }

    #[test]
    fn a_fall_from_noise_is_a_clear_descent() {
        // The same noise, with the loss halving past a rate of 1e-4: a descent the verdict sees.
        let mut curve = Curve::default();
        for i in 0..STEPS {
            let lr = lr_at(i, STEPS);
            let fall = if lr > 1e-4 { 0.5 } else { 1.0 };
            if curve.push(lr, noise(i, lr) * fall + if lr > 1e-4 { 0.0 } else { 0.2 }) {
                break;
            }
        }
        assert_eq!(read(&curve.points).0, Verdict::Suggested);
    }
}
