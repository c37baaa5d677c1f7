//! 3x3 convolutions at stride 1 and padding 1 of channels-last maps by Winograd's minimal
//! filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
//! 2016). Each 2x2 output tile is `A^T [(G g G^T) ⊙ (B^T d B)] A` of the 4x4 input tile `d`
//! around it, so the sum over input channels becomes 16 matrix products, one per position of
//! the 4x4 transformed tile, with 16 multiply-adds per tile where patch products take 36.
//!
//! The backward pass runs the same pipeline transposed: the output's gradient to `A dY A^T`,
//! the products with the transformed filters (the input's side, then `B · B^T` back onto the
//! input) and with the transformed tiles (the filters' side, then `G^T · G` back to 3x3).

use super::{image_groups, matmul_into_rows, sum_in_order, MatRef};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::OnceLock;

/// Positions in a transformed 4x4 tile.
const POSITIONS: usize = 16;

/// Floats of one block's transformed tiles: blocks of this size stay in the caches.
#[cfg(not(test))]
const BLOCK_FLOATS: usize = 1 << 18;
/// Tiles a block has at least: each block's products pack all of the transformed filters.
#[cfg(not(test))]
const MIN_BLOCK_TILES: usize = 128;
/// Small blocks in unit tests, so that their maps span several.
#[cfg(test)]
const BLOCK_FLOATS: usize = 1 << 9;
#[cfg(test)]
const MIN_BLOCK_TILES: usize = 1;

/// Channels handled together by the transforms: one AVX-512 register of floats.
const LANES: usize = 16;

/// One value of each of [`LANES`] consecutive channels.
#[derive(Clone, Copy)]
struct Lanes([f32; LANES]);

impl Lanes {
    const ZERO: Self = Self([0.0; LANES]);

    /// The first `s.len()` (at most [`LANES`]) channels from `s`, the rest 0.
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        match <&[f32; LANES]>::try_from(s) {
            Ok(full) => Self(*full),
            Err(_) => {
                let mut lanes = Self::ZERO;
                lanes.0[..s.len()].copy_from_slice(s);
                lanes
            }
        }
    }

    /// Writes the first `s.len()` channels to `s`.
    #[inline(always)]
    fn store(self, s: &mut [f32]) {
        match <&mut [f32; LANES]>::try_from(&mut *s) {
            Ok(full) => *full = self.0,
            Err(_) => {
                let n = s.len();
                s.copy_from_slice(&self.0[..n]);
            }
        }
    }
}

impl std::ops::Add for Lanes {
    type Output = Self;
    #[inline(always)]
    fn add(mut self, other: Self) -> Self {
        for i in 0..LANES {
            self.0[i] += other.0[i];
        }
        self
    }
}

impl std::ops::Sub for Lanes {
    type Output = Self;
    #[inline(always)]
    fn sub(mut self, other: Self) -> Self {
        for i in 0..LANES {
            self.0[i] -= other.0[i];
        }
        self
    }
}

impl std::ops::Mul<f32> for Lanes {
    type Output = Self;
    #[inline(always)]
    fn mul(mut self, k: f32) -> Self {
        for v in &mut self.0 {
            *v *= k;
        }
        self
    }
}

impl std::ops::Neg for Lanes {
    type Output = Self;
    #[inline(always)]
    fn neg(mut self) -> Self {
        for v in &mut self.0 {
            *v = -*v;
        }
        self
    }
}

/// `B^T d` of four values of an input tile's column (or row).
#[inline(always)]
fn input_transform([d0, d1, d2, d3]: [Lanes; 4]) -> [Lanes; 4] {
    [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
}

/// `B v`: the transpose of [`input_transform`].
#[inline(always)]
fn input_transform_t([v0, v1, v2, v3]: [Lanes; 4]) -> [Lanes; 4] {
    [v0, v1 - v2 + v3, v1 + v2 - v0, -v3]
}

/// `A^T m`: two outputs from four transformed values.
#[inline(always)]
fn output_transform([m0, m1, m2, m3]: [Lanes; 4]) -> [Lanes; 2] {
    [m0 + m1 + m2, m1 - m2 - m3]
}

/// `A y`: the transpose of [`output_transform`].
#[inline(always)]
fn output_transform_t([y0, y1]: [Lanes; 2]) -> [Lanes; 4] {
    [y0, y0 + y1, y0 - y1, -y1]
}

/// `G g`: four transformed values from three filter taps.
#[inline(always)]
fn filter_transform([g0, g1, g2]: [Lanes; 3]) -> [Lanes; 4] {
    [g0, (g0 + g1 + g2) * 0.5, (g0 - g1 + g2) * 0.5, g2]
}

/// `G^T u`: the transpose of [`filter_transform`].
#[inline(always)]
fn filter_transform_t([u0, u1, u2, u3]: [Lanes; 4]) -> [Lanes; 3] {
    [u0 + (u1 + u2) * 0.5, (u1 - u2) * 0.5, (u1 + u2) * 0.5 + u3]
}

/// `T X T^T` of the `R` x `R` grid `x` (row-major), for the one-dimensional transform `T`
/// (`R` values to `P`), into `out`, `P` x `P` row-major.
#[inline(always)]
fn separable<const R: usize, const P: usize>(
    x: &[Lanes],
    out: &mut [Lanes],
    transform: impl Fn([Lanes; R]) -> [Lanes; P],
) {
    let mut columns = [[Lanes::ZERO; P]; R];
    for (j, column) in columns.iter_mut().enumerate() {
        let mut values = [Lanes::ZERO; R];
        for (i, v) in values.iter_mut().enumerate() {
            *v = x[i * R + j];
        }
        *column = transform(values);
    }
    for i in 0..P {
        let mut values = [Lanes::ZERO; R];
        for (j, v) in values.iter_mut().enumerate() {
            *v = columns[j][i];
        }
        out[i * P..][..P].copy_from_slice(&transform(values));
    }
}

/// `outputs = f(inputs)`, channel by channel, [`LANES`] channels at a time: every slice is as
/// long as the first output.
#[inline(always)]
fn per_channel<const A: usize, const B: usize>(
    inputs: [&[f32]; A],
    outputs: &mut [&mut [f32]; B],
    f: impl Fn(&[Lanes; A], &mut [Lanes; B]),
) {
    let len = outputs[0].len();
    let (mut x, mut y) = ([Lanes::ZERO; A], [Lanes::ZERO; B]);
    for start in (0..len).step_by(LANES) {
        let end = (start + LANES).min(len);
        for (v, s) in x.iter_mut().zip(inputs) {
            *v = Lanes::load(&s[start..end]);
        }
        f(&x, &mut y);
        for (out, v) in outputs.iter_mut().zip(y) {
            v.store(&mut out[start..end]);
        }
    }
}

/// The first `R` rows of `width` channels of `data` (a transformed tile's 16, say).
#[inline(always)]
fn split_rows_mut<const R: usize>(data: &mut [f32], width: usize) -> [&mut [f32]; R] {
    let mut rows = data.chunks_exact_mut(width);
    std::array::from_fn(|_| rows.next().expect("enough rows"))
}

/// As [`split_rows_mut`], to read.
#[inline(always)]
fn split_rows<const R: usize>(data: &[f32], width: usize) -> [&[f32]; R] {
    let mut rows = data.chunks_exact(width);
    std::array::from_fn(|_| rows.next().expect("enough rows"))
}

/// The tiles of a batch `[n, h, w, c]` under a 3x3 convolution at stride 1 and padding 1: `th`
/// by `tw` tiles of 2x2 output pixels per image (the last row or column of tiles half outside
/// when a side is odd), numbered by tile row `(image, ty)` then column.
#[derive(Debug, Clone, Copy)]
struct Tiles {
    n: usize,
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
}

impl Tiles {
    fn new([n, h, w]: [usize; 3]) -> Self {
        Self {
            n,
            h,
            w,
            th: h.div_ceil(2),
            tw: w.div_ceil(2),
        }
    }

    /// Tile rows of the whole batch.
    fn rows(&self) -> usize {
        self.n * self.th
    }

    /// The first output pixel of tile row `row` (the batch's pixel count past the last row).
    fn first_pixel(&self, row: usize) -> usize {
        let (image, ty) = (row / self.th, row % self.th);
        (image * self.h + 2 * ty) * self.w
    }

    /// Tile rows per block of transformed tiles `[tiles, 16, width]`: [`BLOCK_FLOATS`] of them,
    /// but at least [`MIN_BLOCK_TILES`] tiles.
    fn rows_per_block(&self, width: usize) -> usize {
        (BLOCK_FLOATS / (POSITIONS * width * self.tw)).max(MIN_BLOCK_TILES.div_ceil(self.tw))
    }

    /// (image, top input row, left input column) of every tile in tile rows `rows`, in order.
    fn corners(&self, rows: Range<usize>) -> impl Iterator<Item = (usize, isize, isize)> + '_ {
        rows.flat_map(move |row| {
            let (image, ty) = (row / self.th, row % self.th);
            (0..self.tw).map(move |tx| (image, 2 * ty as isize - 1, 2 * tx as isize - 1))
        })
    }

    /// The pixel index of (`image`, `y`, `x`) when it lies inside the image.
    fn pixel(&self, image: usize, y: isize, x: isize) -> Option<usize> {
        let inside = (0..self.h as isize).contains(&y) && (0..self.w as isize).contains(&x);
        inside.then(|| (image * self.h + y as usize) * self.w + x as usize)
    }
}

/// A bank of 3x3 filters transformed for [`WinogradFilter::forward`]: `U = G g G^T` of each
/// (input, output) channel pair, `[ci, 16, co]`.
pub struct WinogradFilter {
    u: Vec<f32>,
    /// `U` transposed, `[co, 16, ci]`, made for the input's gradient.
    ut: OnceLock<Vec<f32>>,
    ci: usize,
    co: usize,
}

impl WinogradFilter {
    /// Transforms `weight` `[9 * ci, co]`, rows in (ky, kx, ci) order.
    pub fn new(weight: &[f32], ci: usize, co: usize) -> Self {
        assert_eq!(weight.len(), 9 * ci * co, "a 3x3 filter bank");
        let mut u = vec![0f32; ci * POSITIONS * co];
        u.par_chunks_mut(POSITIONS * co)
            .enumerate()
            .for_each(|(c, tile)| {
                crate::vectorized! {
                    let taps: [&[f32]; 9] =
                        std::array::from_fn(|tap| &weight[(tap * ci + c) * co..][..co]);
                    per_channel(taps, &mut split_rows_mut::<POSITIONS>(tile, co), |g, u| {
                        separable(g, u, filter_transform)
                    });
                }
            });
        Self {
            u,
            ut: OnceLock::new(),
            ci,
            co,
        }
    }

    /// `U` transposed, `[co, 16, ci]`, made on first use.
    fn transposed(&self) -> &[f32] {
        let (ci, co) = (self.ci, self.co);
        self.ut.get_or_init(|| {
            let mut ut = vec![0f32; co * POSITIONS * ci];
            ut.par_chunks_mut(POSITIONS * ci)
                .enumerate()
                .for_each(|(o, tile)| {
                    for (position, row) in tile.chunks_exact_mut(ci).enumerate() {
                        for (c, v) in row.iter_mut().enumerate() {
                            *v = self.u[(c * POSITIONS + position) * co + o];
                        }
                    }
                });
            ut
        })
    }

    /// The convolution of the channels-last batch `x` `[n, h, w, ci]`, plus `shift` `[co]` and
    /// `residual` (`[n, h, w, co]`), through a ReLU when `relu`: `[n, h, w, co]`.
    pub fn forward(
        &self,
        x: &[f32],
        dims: [usize; 3],
        shift: &[f32],
        residual: Option<&[f32]>,
        relu: bool,
    ) -> Vec<f32> {
        let (ci, co, tiles) = (self.ci, self.co, Tiles::new(dims));
        let tasks = 2 * rayon::current_num_threads();
        let per_block = tiles
            .rows_per_block(ci.max(co))
            .min(tiles.rows().div_ceil(tasks))
            .max(1);
        let mut y = vec![0f32; tiles.first_pixel(tiles.rows()) * co];
        // Each block's tile rows write a contiguous run of output rows.
        let mut blocks = Vec::new();
        let mut rest = &mut y[..];
        for start in (0..tiles.rows()).step_by(per_block) {
            let rows = start..(start + per_block).min(tiles.rows());
            let pixels = tiles.first_pixel(rows.end) - tiles.first_pixel(rows.start);
            let (out, tail) = std::mem::take(&mut rest).split_at_mut(pixels * co);
            blocks.push((rows, out));
            rest = tail;
        }
        let zeros = vec![0f32; ci];
        let epilogue = Epilogue {
            shift,
            residual,
            relu,
        };
        blocks.into_par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(v, m), (rows, out)| {
                crate::vectorized! {
                    let count = rows.len() * tiles.tw;
                    v.resize(count * POSITIONS * ci, 0.0);
                    transform_inputs(x, &tiles, rows.clone(), &zeros, v);
                    m.resize(count * POSITIONS * co, 0.0);
                    for position in 0..POSITIONS {
                        matmul_into_rows(
                            &mut m[position * co..],
                            POSITIONS * co,
                            transformed_at(v, position, count, ci),
                            transformed_at(&self.u, position, ci, co),
                            false,
                            false,
                        );
                    }
                    transform_outputs(m, &tiles, rows, &epilogue, out);
                }
            },
        );
        y
    }

    /// The backward pass of [`WinogradFilter::forward`] from `gz`, the gradient of its output
    /// before the ReLU, on the batch `x` it ran on: the input's gradient when `input` is set,
    /// and when `params` is set the gradient of the untransformed filters `[9 * ci, co]` (the
    /// layout [`WinogradFilter::new`] takes).
    pub fn backward(
        &self,
        x: &[f32],
        dims: [usize; 3],
        gz: &[f32],
        input: bool,
        params: bool,
    ) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
        let (ci, co, tiles) = (self.ci, self.co, Tiles::new(dims));
        let [n, h, w] = dims;
        let mut gx = vec![0f32; if input { n * h * w * ci } else { 0 }];
        let parts = image_groups(&mut gx, n, h * w * ci);
        // Made before the threads start, as they all read it.
        let ut = if input { self.transposed() } else { &[] };
        let per_block = tiles.rows_per_block(ci.max(co));
        let zeros = vec![0f32; ci.max(co)];
        let partials: Vec<Vec<f32>> = parts
            .into_par_iter()
            .map(|(images, gx)| {
                crate::vectorized! {
                    let mut gu = vec![0f32; if params { self.u.len() } else { 0 }];
                    let (mut v, mut m, mut dv) = (Vec::new(), Vec::new(), Vec::new());
                    let all_rows = images.start * tiles.th..images.end * tiles.th;
                    for start in all_rows.clone().step_by(per_block) {
                        let rows = start..(start + per_block).min(all_rows.end);
                        let count = rows.len() * tiles.tw;
                        m.resize(count * POSITIONS * co, 0.0);
                        transform_output_gradients(gz, &tiles, rows.clone(), &zeros, &mut m);
                        if params {
                            v.resize(count * POSITIONS * ci, 0.0);
                            transform_inputs(x, &tiles, rows.clone(), &zeros, &mut v);
                            for position in 0..POSITIONS {
                                matmul_into_rows(
                                    &mut gu[position * co..],
                                    POSITIONS * co,
                                    transformed_at(&v, position, count, ci).t(),
                                    transformed_at(&m, position, count, co),
                                    true,
                                    false,
                                );
                            }
                        }
                        if input {
                            dv.resize(count * POSITIONS * ci, 0.0);
                            for position in 0..POSITIONS {
                                matmul_into_rows(
                                    &mut dv[position * ci..],
                                    POSITIONS * ci,
                                    transformed_at(&m, position, count, co),
                                    transformed_at(ut, position, co, ci),
                                    false,
                                    false,
                                );
                            }
                            let first_pixel = images.start * h * w;
                            add_input_gradients(&dv, &tiles, rows, first_pixel, gx);
                        }
                    }
                    gu
                }
            })
            .collect();
        let gweight = params.then(|| self.filter_gradient(&sum_in_order(partials, self.u.len())));
        (input.then_some(gx), gweight)
    }

    /// `G^T gu G` of the transformed filters' gradient `gu` `[ci, 16, co]`: the gradient of the
    /// filters `[9 * ci, co]`.
    fn filter_gradient(&self, gu: &[f32]) -> Vec<f32> {
        let (ci, co) = (self.ci, self.co);
        let mut g = vec![0f32; 9 * ci * co];
        crate::vectorized! {
            let mut taps = g.chunks_exact_mut(ci * co);
            let mut taps: [&mut [f32]; 9] = std::array::from_fn(|_| taps.next().unwrap());
            for (c, tile) in gu.chunks_exact(POSITIONS * co).enumerate() {
                let mut filter = taps.each_mut().map(|t| &mut t[c * co..][..co]);
                per_channel(split_rows::<POSITIONS>(tile, co), &mut filter, |u, g| {
                    separable(u, g, filter_transform_t)
                });
            }
        }
        g
    }
}

/// Position `position`'s `[rows, width]` matrix of transformed tiles (or filters) `[rows, 16,
/// width]`.
fn transformed_at(data: &[f32], position: usize, rows: usize, width: usize) -> MatRef<'_> {
    MatRef::with_row_stride(&data[position * width..], rows, width, POSITIONS * width)
}

/// The row (`width` channels) of pixel (`image`, `y`, `x`) of the channels-last batch `data`,
/// or `zeros` outside the image.
#[inline(always)]
fn pixel_row<'a>(
    data: &'a [f32],
    tiles: &Tiles,
    (image, y, x): (usize, isize, isize),
    zeros: &'a [f32],
    width: usize,
) -> &'a [f32] {
    match tiles.pixel(image, y, x) {
        Some(p) => &data[p * width..][..width],
        None => &zeros[..width],
    }
}

/// The transformed input tiles `B^T d B` of tile rows `rows` of `x` into `v` `[tiles, 16, ci]`;
/// `zeros` (at least `ci` long) stands for the padding.
#[inline(always)]
fn transform_inputs(x: &[f32], tiles: &Tiles, rows: Range<usize>, zeros: &[f32], v: &mut [f32]) {
    let ci = x.len() / (tiles.n * tiles.h * tiles.w);
    for (tile, (image, top, left)) in v.chunks_exact_mut(POSITIONS * ci).zip(tiles.corners(rows)) {
        let d: [&[f32]; POSITIONS] = std::array::from_fn(|q| {
            let at = (image, top + (q / 4) as isize, left + (q % 4) as isize);
            pixel_row(x, tiles, at, zeros, ci)
        });
        per_channel(d, &mut split_rows_mut::<POSITIONS>(tile, ci), |d, v| {
            separable(d, v, input_transform)
        });
    }
}

/// What the forward pass adds to the convolution: `relu?(conv + shift + residual)`.
struct Epilogue<'a> {
    shift: &'a [f32],
    residual: Option<&'a [f32]>,
    relu: bool,
}

/// The outputs `A^T m A` of tile rows `rows` from their products `m` `[tiles, 16, co]`, through
/// `epilogue`, into `out`, the output rows from the first tile row's on.
#[inline(always)]
fn transform_outputs(
    m: &[f32],
    tiles: &Tiles,
    rows: Range<usize>,
    epilogue: &Epilogue,
    out: &mut [f32],
) {
    let co = epilogue.shift.len();
    let first = tiles.first_pixel(rows.start);
    let mut quad_rows = vec![0f32; 4 * co];
    for (tile, (image, top, left)) in m.chunks_exact(POSITIONS * co).zip(tiles.corners(rows)) {
        let mut quad = split_rows_mut::<4>(&mut quad_rows, co);
        per_channel(split_rows::<POSITIONS>(tile, co), &mut quad, |m, y| {
            separable(m, y, output_transform)
        });
        for (q, value) in quad.iter().enumerate() {
            let (y, x) = (top + 1 + (q / 2) as isize, left + 1 + (q % 2) as isize);
            let Some(p) = tiles.pixel(image, y, x) else {
                continue;
            };
            let dst = &mut out[(p - first) * co..][..co];
            dst.iter_mut()
                .zip(value.iter())
                .zip(epilogue.shift)
                .for_each(|((d, &v), &s)| *d = v + s);
            if let Some(r) = epilogue.residual {
                dst.iter_mut()
                    .zip(&r[p * co..][..co])
                    .for_each(|(d, &r)| *d += r);
            }
            if epilogue.relu {
                dst.iter_mut().for_each(|d| *d = d.max(0.0));
            }
        }
    }
}

/// The transformed gradients `A dy A^T` of the 2x2 output tiles of tile rows `rows`, from the
/// output's gradient `gz` `[n, h, w, co]`, into `m` `[tiles, 16, co]`; `zeros` (at least `co`
/// long) stands for the pixels past an odd side.
#[inline(always)]
fn transform_output_gradients(
    gz: &[f32],
    tiles: &Tiles,
    rows: Range<usize>,
    zeros: &[f32],
    m: &mut [f32],
) {
    let co = gz.len() / (tiles.n * tiles.h * tiles.w);
    for (tile, (image, top, left)) in m.chunks_exact_mut(POSITIONS * co).zip(tiles.corners(rows)) {
        let quad: [&[f32]; 4] = std::array::from_fn(|q| {
            let at = (
                image,
                top + 1 + (q / 2) as isize,
                left + 1 + (q % 2) as isize,
            );
            pixel_row(gz, tiles, at, zeros, co)
        });
        per_channel(quad, &mut split_rows_mut::<POSITIONS>(tile, co), |g, m| {
            separable(g, m, output_transform_t)
        });
    }
}

/// Adds the input gradients `B dv B^T` of tile rows `rows`, from their products `dv` `[tiles,
/// 16, ci]`, onto `gx`, the input's gradient from pixel `first_pixel` on.
#[inline(always)]
fn add_input_gradients(
    dv: &[f32],
    tiles: &Tiles,
    rows: Range<usize>,
    first_pixel: usize,
    gx: &mut [f32],
) {
    let ci = dv.len() / (rows.len() * tiles.tw * POSITIONS);
    let mut grid = vec![0f32; POSITIONS * ci];
    for (tile, (image, top, left)) in dv.chunks_exact(POSITIONS * ci).zip(tiles.corners(rows)) {
        per_channel(
            split_rows::<POSITIONS>(tile, ci),
            &mut split_rows_mut::<POSITIONS>(&mut grid, ci),
            |v, d| separable(v, d, input_transform_t),
        );
        for (q, row) in grid.chunks_exact(ci).enumerate() {
            let (y, x) = (top + (q / 4) as isize, left + (q % 4) as isize);
            if let Some(p) = tiles.pixel(image, y, x) {
                gx[(p - first_pixel) * ci..][..ci]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(g, &d)| *g += d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::testing::{max_abs_diff_of, uniform as random};
    use candle_core::{Device, Result, Tensor, Var};

    /// Forward and backward against candle's convolution and its autograd, on odd and even
    /// sides, a one-pixel side, and channel counts beyond one vector register.
    #[test]
    fn matches_candle_convolution_and_its_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for [n, h, w, ci, co] in [[2, 7, 6, 5, 3], [3, 5, 9, 18, 35], [1, 1, 4, 16, 16]] {
            // timm's layout [co, ci, 3, 3], and the (ky, kx, ci) x co one the filter takes.
            let raw = random(co * ci * 9, 1);
            let mut folded = vec![0f32; raw.len()];
            for (o, filter) in raw.chunks_exact(ci * 9).enumerate() {
                for (c, taps) in filter.chunks_exact(9).enumerate() {
                    for (tap, &v) in taps.iter().enumerate() {
                        folded[(tap * ci + c) * co + o] = v;
                    }
                }
            }
            let (x, r) = (random(n * h * w * ci, 2), random(n * h * w * co, 3));
            let filter = WinogradFilter::new(&folded, ci, co);
            let ours = filter.forward(&x, [n, h, w], &vec![0.0; co], None, false);
            let (gx, gw) = filter.backward(&x, [n, h, w], &r, true, true);

            let xv = Var::from_tensor(&Tensor::from_vec(x.clone(), (n, h, w, ci), &dev)?)?;
            let wv = Var::from_tensor(&Tensor::from_vec(raw, (co, ci, 3, 3), &dev)?)?;
            let y = xv
                .as_tensor()
                .permute((0, 3, 1, 2))?
                .contiguous()?
                .conv2d(wv.as_tensor(), 1, 1, 1, 1)?
                .permute((0, 2, 3, 1))?;
            let rt = Tensor::from_vec(r.clone(), (n, h, w, co), &dev)?;
            let grads = (&y * &rt)?.sum_all()?.backward()?;
            let want_gx = grads.get(&xv).unwrap().flatten_all()?.to_vec1::<f32>()?;
            // candle's weight gradient into the filter's layout.
            let want_gw = grads
                .get(&wv)
                .unwrap()
                .permute((2, 3, 1, 0))?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let want_y = y.flatten_all()?.to_vec1::<f32>()?;
            let case = format!("{n}x{h}x{w} {ci}->{co}");
            for (what, got, want) in [
                ("forward", ours, want_y),
                ("input gradient", gx.unwrap(), want_gx),
                ("filter gradient", gw.unwrap(), want_gw),
            ] {
                let err = max_abs_diff_of(&got, &want);
                assert!(err < 1e-4, "{case}: {what} off by {err}");
            }
            let (only_gx, none) = filter.backward(&x, [n, h, w], &r, true, false);
            assert!(only_gx.is_some() && none.is_none());
        }
        Ok(())
    }
}
