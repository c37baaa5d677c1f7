//! CPU operations that candle lacks or runs slowly, each with its own backward; on other devices
//! they run as [`portable`] compositions of candle operations.

pub mod attention;
pub mod batched_matmul;
pub mod bn_act;
pub mod channel_affine;
pub mod dense_conv;
pub mod depthwise;
pub mod gelu;
pub mod layer_norm;
pub mod linear;
pub mod maxpool;
pub mod portable;
pub mod softmax;
pub mod winograd;

use candle_core::{bail, CpuStorage, Layout, Result};
use rayon::prelude::*;
use std::ops::Range;

/// The f32 slice a contiguous layout covers.
fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("custom op needs a contiguous f32 tensor"),
    }
}

/// `out[r, c] = op(x[r, c], v[c])` for a row-major `x` of rows of `v.len()` values, in parallel.
fn map_rows(x: &[f32], v: &[f32], op: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    /// Rows per parallel task.
    const ROWS_PER_TASK: usize = 128;
    let c = v.len();
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(c * ROWS_PER_TASK)
        .zip(x.par_chunks(c * ROWS_PER_TASK))
        .for_each(|(out, x)| {
            crate::vectorized! {
                for (out, x) in out.chunks_mut(c).zip(x.chunks(c)) {
                    for ((o, &x), &v) in out.iter_mut().zip(x).zip(v) {
                        *o = op(x, v);
                    }
                }
            }
        });
    out
}

/// `e^x`, free of branches and calls so that loops over it vectorise (libm's `expf` is a scalar
/// call): Cephes' single-precision `expf` — `x = n ln 2 + r`, a degree-7 polynomial in `r`, `2^n`
/// put into the exponent bits — within 2 ulp of libm's. `x` is clamped to [-87.3, 88.4], the
/// range whose results are normal floats.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    /// Adding 1.5 * 2^23 rounds to an integer, which then sits in the low mantissa bits.
    const ROUNDER: f32 = 12_582_912.0;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
    let x = x.clamp(-87.336_54, 88.376_26);
    let t = x * std::f32::consts::LOG2_E + ROUNDER;
    let n = t - ROUNDER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = P[1..].iter().fold(P[0], |acc, &c| acc * r + c);
    let er = p * r * r + r + 1.0;
    let two_n =
        f32::from_bits(((t.to_bits() as i32 - ROUNDER.to_bits() as i32 + 127) << 23) as u32);
    er * two_n
}

/// `dst = (if accumulate { dst } else { 0 }) + lhs @ rhs` with the gemm crate (candle's kernel),
/// every operand given by its pointer and (row, column) strides: on rayon's threads when
/// `parallel` (and there are several), on the calling thread otherwise.
///
/// The threads share the work as a grid of output tiles, each multiplied by a single-threaded
/// gemm ([`tile_grid`]). On a weight gradient (`[192, 6304] @ [6304, 768]`: few rows and
/// columns, a long inner dimension) gemm's own threading ran two threads at 0.97-1.5x one
/// thread's speed, tiles at about 2x; on ViT-Tiny's other products the two were 0.89-1.29x of each
/// other in a microbenchmark on two cores.
///
/// # Safety
/// Each pointer with its strides must address an `m x k`, `k x n` or `m x n` matrix inside one
/// live allocation, `dst` not overlapping the others.
pub(crate) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, usize),
    accumulate: bool,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    parallel: bool,
) {
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let (tile_rows, tile_cols) = tile_grid((m, n, k), threads);
    if tile_rows * tile_cols == 1 {
        return gemm_on_this_thread((m, n, k), dst, accumulate, lhs, rhs);
    }
    // SAFETY: the tasks write disjoint tiles of `dst` and only read `lhs` and `rhs`, all of
    // which outlive the parallel loop.
    let pointers = unsafe { SharedPtr::new((dst.0, lhs.0, rhs.0)) };
    let (dst_rs, (lhs_rs, lhs_cs), (rhs_rs, rhs_cs)) = (dst.1, (lhs.1, lhs.2), (rhs.1, rhs.2));
    let (rows_per_tile, cols_per_tile) = (m.div_ceil(tile_rows), n.div_ceil(tile_cols));
    (0..tile_rows * tile_cols).into_par_iter().for_each(|tile| {
        let (d, a, b) = pointers.get();
        let (r0, c0) = (
            (tile / tile_cols) * rows_per_tile,
            (tile % tile_cols) * cols_per_tile,
        );
        let (rows, cols) = (
            rows_per_tile.min(m.saturating_sub(r0)),
            cols_per_tile.min(n.saturating_sub(c0)),
        );
        if rows * cols == 0 {
            return;
        }
        // SAFETY: the tile lies inside the m x n product, so every pointer below stays inside
        // the matrices the caller vouched for, and tiles do not overlap.
        unsafe {
            gemm_on_this_thread(
                (rows, cols, k),
                (d.add(r0 * dst_rs + c0), dst_rs),
                accumulate,
                (a.add(r0 * lhs_rs), lhs_rs, lhs_cs),
                (b.add(c0 * rhs_cs), rhs_rs, rhs_cs),
            )
        }
    });
}

/// A value holding raw pointers, shared with rayon's tasks, that write disjoint parts of what
/// they point to.
#[derive(Clone, Copy)]
pub(crate) struct SharedPtr<P>(P);

// SAFETY: `SharedPtr::new`'s caller vouches that the tasks' accesses through the pointers do not
// race and that the pointees outlive the tasks.
unsafe impl<P> Send for SharedPtr<P> {}
unsafe impl<P> Sync for SharedPtr<P> {}

impl<P: Copy> SharedPtr<P> {
    /// # Safety
    /// Writes through the pointers from different tasks must not overlap, nor overlap reads, and
    /// the pointees must outlive every task that uses them.
    pub(crate) unsafe fn new(pointers: P) -> Self {
        Self(pointers)
    }

    /// The pointers (a method, so that closures capture the whole value).
    pub(crate) fn get(self) -> P {
        self.0
    }
}

/// Output tiles of an `m x k` by `k x n` product for `threads` threads, as (tiles down, tiles
/// across): as many tiles as threads where each keeps a full microkernel block of rows and of
/// columns, and of the grids with that many tiles the one that packs least (each tile packs its
/// rows of `lhs` and its columns of `rhs`); one tile when the product is too small to be worth
/// the threads.
fn tile_grid((m, n, k): (usize, usize, usize), threads: usize) -> (usize, usize) {
    /// Rows or columns a tile keeps at least: the AVX-512 microkernel's block.
    const MIN_SIDE: usize = 64;
    /// Multiply-adds below which waking another thread costs more than it saves.
    const MIN_WORK: usize = 64 * 64 * 64;
    if threads < 2 || m * n * k < MIN_WORK {
        return (1, 1);
    }
    let (most_down, most_across) = (m.div_ceil(MIN_SIDE), n.div_ceil(MIN_SIDE));
    (1..=threads.min(most_down))
        .map(|down| (down, (threads / down).min(most_across)))
        .max_by_key(|&(down, across)| {
            // Most tiles first, then the least packing: each tile packs its rows of `lhs` and
            // its columns of `rhs`.
            let packed = across * m * k + down * k * n;
            (down * across, std::cmp::Reverse(packed))
        })
        .unwrap_or((1, 1))
}

/// [`matmul`] on the calling thread.
///
/// # Safety
/// As for [`matmul`].
unsafe fn gemm_on_this_thread(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, usize),
    accumulate: bool,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
) {
    gemm::gemm(
        m,
        n,
        k,
        dst.0,
        1,
        dst.1 as isize,
        accumulate,
        lhs.0,
        lhs.2 as isize,
        lhs.1 as isize,
        rhs.0,
        rhs.2 as isize,
        rhs.1 as isize,
        if accumulate { 1.0 } else { 0.0 },
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// A matrix over a slice, for [`matmul_into`]: element `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// The row-major `rows` x `cols` matrix at the start of `data`.
    pub(crate) fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The `rows` x `cols` matrix at the start of `data` whose rows start `rs` apart.
    pub(crate) fn with_row_stride(data: &'a [f32], rows: usize, cols: usize, rs: usize) -> Self {
        Self {
            rs,
            ..Self::new(data, rows, cols)
        }
    }

    /// The transpose, as a view.
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// [`matmul`] on slices: `dst = a @ b` (`dst += a @ b` when `accumulate`), `dst` row-major
/// `[a.rows, b.cols]`; on rayon's threads when `parallel`. Panics if an operand reaches outside
/// its slice.
pub(crate) fn matmul_into(dst: &mut [f32], a: MatRef, b: MatRef, accumulate: bool, parallel: bool) {
    matmul_into_rows(dst, b.cols, a, b, accumulate, parallel)
}

/// [`matmul_into`] with the rows of `dst` starting `dst_rs` apart.
pub(crate) fn matmul_into_rows(
    dst: &mut [f32],
    dst_rs: usize,
    a: MatRef,
    b: MatRef,
    accumulate: bool,
    parallel: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "matmul_into: inner dimensions differ");
    if m * n == 0 {
        return;
    }
    assert!(
        dst_rs >= n && dst.len() >= (m - 1) * dst_rs + n,
        "matmul_into: destination too small"
    );
    for x in [&a, &b] {
        let last = (x.rows.saturating_sub(1)) * x.rs + x.cols.saturating_sub(1) * x.cs;
        assert!(
            x.rows * x.cols == 0 || last < x.data.len(),
            "matmul_into: operand outside its slice"
        );
    }
    // SAFETY: the asserts above keep every element the strides reach inside the slices, and
    // `dst` holds the m x n result with rows `dst_rs` apart.
    unsafe {
        matmul(
            (m, n, k),
            (dst.as_mut_ptr(), dst_rs),
            accumulate,
            (a.data.as_ptr(), a.rs, a.cs),
            (b.data.as_ptr(), b.rs, b.cs),
            parallel,
        )
    }
}

/// The groups of images a convolution's backward pass over `n` images gives its tasks, one per
/// thread, with the part of the input gradient `gx` (`image_len` floats per image) each owns, so
/// that a group's overlapping input gradients add up in its own part. When `gx` is empty (no input
/// gradient asked for) the parts are empty.
pub(crate) fn image_groups(
    gx: &mut [f32],
    n: usize,
    image_len: usize,
) -> Vec<(Range<usize>, &mut [f32])> {
    let per_group = n
        .div_ceil(rayon::current_num_threads().clamp(1, n.max(1)))
        .max(1);
    let groups = (0..n)
        .step_by(per_group)
        .map(|first| first..(first + per_group).min(n));
    if gx.is_empty() {
        groups.map(|images| (images, Default::default())).collect()
    } else {
        groups.zip(gx.chunks_mut(per_group * image_len)).collect()
    }
}

/// Element-wise sum of equally long partial results, in their order (so that parallel
/// reductions give the same bits on every run).
pub(crate) fn sum_in_order(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    partials.into_iter().fold(vec![0f32; len], |mut acc, p| {
        crate::vectorized! { acc.iter_mut().zip(&p).for_each(|(a, p)| *a += p) };
        acc
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_matches_libm_to_two_ulp() {
        for i in -87_000..=88_000 {
            let x = i as f32 * 1e-3;
            let (got, want) = (super::exp_f32(x), x.exp());
            assert!(
                (got - want).abs() <= 2.0 * f32::EPSILON * want,
                "exp({x}) = {got}, libm {want}"
            );
        }
        assert_eq!(super::exp_f32(-200.0), (-87.336_54f32).exp());
        assert!(super::exp_f32(200.0).is_finite());
    }

    #[test]
    fn tiles_fill_the_threads_and_share_the_longer_side() {
        use super::tile_grid;
        // A weight gradient: few rows, more columns, a long inner dimension.
        assert_eq!(tile_grid((192, 768, 6304), 2), (1, 2));
        assert_eq!(tile_grid((6304, 192, 768), 2), (2, 1));
        assert_eq!(tile_grid((6304, 768, 192), 4), (4, 1));
        assert_eq!(tile_grid((100, 100, 100), 16), (2, 2));
        assert_eq!(tile_grid((32, 32, 32), 2), (1, 1));
        assert_eq!(tile_grid((6304, 192, 768), 1), (1, 1));
    }

    #[test]
    fn tiled_products_match_one_thread() {
        use super::{matmul_into, MatRef};
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(5)
            .build()
            .unwrap();
        // Tiles down, across, and both; `b` as a transposed view; with and without accumulating.
        for (m, k, n) in [(300, 70, 90), (90, 300, 260), (200, 50, 190)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let start: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            for accumulate in [false, true] {
                let product = |parallel| {
                    let mut dst = start.clone();
                    let (a, b) = (MatRef::new(&a, m, k), MatRef::new(&b, n, k).t());
                    pool.install(|| matmul_into(&mut dst, a, b, accumulate, parallel));
                    dst
                };
                let (tiled, serial) = (product(true), product(false));
                let worst = super::testing::max_abs_diff_of(&tiled, &serial);
                assert!(worst < 1e-4, "{m}x{k}x{n}: off by {worst}");
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use candle_core::{Result, Tensor, Var};
    use rand::{Rng, SeedableRng};

    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    /// `len` values drawn uniformly from [-1, 1) with the seed `seed`.
    pub fn uniform(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// The largest difference between equally long slices.
    pub fn max_abs_diff_of(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    /// Compares the backward pass of `f` with central finite differences of the scalar
    /// `sum(f(vars) * r)` for a fixed random `r`, on up to 24 elements of each variable.
    pub fn check_gradients(vars: &[&Var], f: impl Fn(&[&Tensor]) -> Result<Tensor>) -> Result<()> {
        let tensors: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let y = f(&tensors)?;
        let r = Tensor::randn(0f32, 1.0, y.shape(), y.device())?;
        let loss = |vars: &[&Var]| -> Result<f64> {
            let t: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
            f(&t)?
                .mul(&r)?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()
        };
        let grads = y.mul(&r)?.sum_all()?.backward()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let eps = 1e-2f32;
        for (vi, var) in vars.iter().enumerate() {
            let analytic = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for variable {vi}"))
                .flatten_all()?
                .to_vec1::<f32>()?;
            let base = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            for _ in 0..24.min(base.len()) {
                let i = rng.random_range(0..base.len());
                let probe = |delta: f32| -> Result<f64> {
                    let mut v = base.clone();
                    v[i] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), var.device())?)?;
                    loss(vars)
                };
                let numeric = ((probe(eps)? - probe(-eps)?) / (2.0 * eps as f64)) as f32;
                var.set(&Tensor::from_vec(base.clone(), var.shape(), var.device())?)?;
                let tol = 2e-2 * numeric.abs().max(1.0);
                assert!(
                    (analytic[i] - numeric).abs() <= tol,
                    "variable {vi} element {i}: backward {} vs finite difference {numeric}",
                    analytic[i]
                );
            }
        }
        Ok(())
    }

    /// Compares `analytic`, the gradient of `sum(f(x) * r)` with respect to `x`, with central
    /// finite differences on up to 24 elements of `x`: [`check_gradients`] for kernels on slices.
    pub fn check_slice_gradient(
        x: &[f32],
        r: &[f32],
        f: impl Fn(&[f32]) -> Vec<f32>,
        analytic: &[f32],
    ) {
        let loss =
            |x: &[f32]| -> f64 { f(x).iter().zip(r).map(|(&y, &r)| y as f64 * r as f64).sum() };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let eps = 1e-2f32;
        for _ in 0..24.min(x.len()) {
            let i = rng.random_range(0..x.len());
            let probe = |delta: f32| {
                let mut v = x.to_vec();
                v[i] += delta;
                loss(&v)
            };
            let numeric = ((probe(eps) - probe(-eps)) / (2.0 * eps as f64)) as f32;
            let tol = 2e-2 * numeric.abs().max(1.0);
            assert!(
                (analytic[i] - numeric).abs() <= tol,
                "element {i}: backward {} vs finite difference {numeric}",
                analytic[i]
            );
        }
    }
}
