//! The vector instructions the kernels (the model's operations, image resizing) run with, picked at run time: the crate is compiled for
//! baseline x86-64 (SSE2), so one binary runs on every x86-64 CPU, and each kernel's loops are
//! compiled three times — for AVX-512, for AVX2 with FMA and for the baseline — the widest the
//! CPU has chosen once per process, as the `gemm` crate does for its matrix products.
//!
//! Mul and add stay separate instructions at every level (Rust never contracts them into FMA),
//! so every level computes the same bits.

use std::sync::OnceLock;

/// The environment variable that caps the level (`avx512`, `avx2` or `baseline`), for comparing
/// levels on one machine; a level the CPU lacks is never picked.
pub const CAP_VARIABLE: &str = "TLTUI_SIMD";

/// An instruction-set level the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// x86-64's baseline (SSE2), or any other architecture.
    Baseline,
    /// AVX2 and FMA (x86-64-v3's vectors).
    Avx2,
    /// AVX-512 F, BW, CD, DQ and VL (x86-64-v4's vectors).
    Avx512,
}

impl Level {
    /// The level's name as `TLTUI_SIMD` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Level::Baseline => "baseline",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// The instructions the kernels use at this level, in words.
    pub fn description(self) -> &'static str {
        match self {
            Level::Baseline if cfg!(target_arch = "x86_64") => "SSE2 (baseline x86-64)",
            Level::Baseline => "the target's baseline",
            Level::Avx2 => "AVX2+FMA",
            Level::Avx512 => "AVX-512",
        }
    }

    fn parse(s: &str) -> Option<Level> {
        [Level::Baseline, Level::Avx2, Level::Avx512]
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s.trim()))
    }
}

/// The widest level this CPU supports.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f")
            && has!("avx512bw")
            && has!("avx512cd")
            && has!("avx512dq")
            && has!("avx512vl")
            && has!("avx2")
            && has!("fma")
        {
            return Level::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// The level the kernels run at: [`detected`], capped by `TLTUI_SIMD` when it names a level.
/// Decided once per process.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = std::env::var(CAP_VARIABLE)
            .ok()
            .and_then(|v| Level::parse(&v));
        cap.map_or(detected(), |cap| cap.min(detected()))
    })
}

/// A line for logs and reports: the kernels' level, and the CPU's when the cap lowered it.
pub fn summary() -> String {
    let (picked, cpu) = (level(), detected());
    if picked == cpu {
        format!("kernels: {}", picked.description())
    } else {
        format!(
            "kernels: {} ({CAP_VARIABLE}; the CPU has {})",
            picked.description(),
            cpu.description()
        )
    }
}

/// Runs `f` compiled for [`level`]. `f` must be marked `#[inline(always)]` (the
/// [`vectorized!`](crate::vectorized) macro does it), so that its loops are compiled inside each
/// level's copy rather than once for the baseline; so must the functions and closures its loops
/// call per element.
#[inline(always)]
pub fn run<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx2,fma")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match level() {
            // SAFETY: `level` picks a level only when the CPU has all of its features.
            Level::Avx512 => return unsafe { avx512(f) },
            // SAFETY: as above.
            Level::Avx2 => return unsafe { avx2(f) },
            Level::Baseline => {}
        }
    }
    f()
}

/// Runs the block compiled for the widest vector instructions the CPU has
/// ([`simd::run`](crate::simd::run) on an `#[inline(always)]` closure).
#[macro_export]
macro_rules! vectorized {
    ($($body:tt)*) => {
        $crate::simd::run(
            #[inline(always)]
            || { $($body)* },
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_by_name_and_order_by_width() {
        for l in [Level::Baseline, Level::Avx2, Level::Avx512] {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::parse(" AVX2 "), Some(Level::Avx2));
        assert_eq!(Level::parse("sse4"), None);
        assert!(Level::Baseline < Level::Avx2 && Level::Avx2 < Level::Avx512);
        assert!(level() <= detected());
    }

    #[test]
    fn a_vectorized_loop_gives_the_baseline_bits() {
        let x: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.37).sin()).collect();
        let plain: Vec<f32> = x.iter().map(|v| v * 1.5 + 0.25).collect();
        let wide = crate::vectorized! { x.iter().map(|v| v * 1.5 + 0.25).collect::<Vec<f32>>() };
        assert_eq!(plain, wide);
    }
}
