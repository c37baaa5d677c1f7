//! Decoded images at working resolution, kept in memory within a budget, and batch assembly.

use super::augment::{self, AugmentParams};
use super::decode::{decode_fingerprinted, decode_rgb};
use super::fingerprint::Fingerprint;
use super::preprocess::Preprocess;
use super::{Sample, Skipped};
use crate::config::AugmentConfig;
use candle_core::{Device, Tensor};
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A decoded image (`None` when left on disk beyond the budget) and its fingerprint, or why it is
/// unusable.
type Decoded = Result<(Option<Arc<RgbImage>>, Fingerprint), String>;

/// How a batch's images are turned into network input.
#[derive(Debug, Clone, Copy)]
pub enum BatchMode {
    /// The backbone's eval transform.
    Eval,
    /// Random augmentation, drawn per image from the seed, the epoch and the image's path.
    Augment { epoch: u64 },
}

/// Working-resolution images by path; `None` marks one left on disk beyond the memory budget.
pub struct ImageStore {
    prep: Preprocess,
    augment: AugmentConfig,
    seed: u64,
    max_pixels: u64,
    images: HashMap<PathBuf, Option<Arc<RgbImage>>>,
    fingerprints: HashMap<PathBuf, Fingerprint>,
}

impl ImageStore {
    /// Decodes every path in parallel, fingerprinting each image and keeping images in memory
    /// until `budget_bytes` is spent. Returns the store and the files that could not be used.
    /// `progress(done, total)` is called as images finish; once it returns `false` the
    /// remaining images are left undecoded and `None` is returned.
    pub fn load(
        paths: &[PathBuf],
        prep: Preprocess,
        augment: AugmentConfig,
        seed: u64,
        max_pixels: u64,
        budget_bytes: u64,
        progress: &(dyn Fn(usize, usize) -> bool + Sync),
    ) -> Option<(Self, Vec<Skipped>)> {
        let used = AtomicU64::new(0);
        let done = AtomicUsize::new(0);
        let halted = AtomicBool::new(false);
        let results: Vec<(PathBuf, Decoded)> = super::parquet::storage_order(paths)
            .par_iter()
            .map(|path| {
                if halted.load(Ordering::Relaxed) {
                    return (path.clone(), Err(String::new()));
                }
                let decoded = decode_fingerprinted(path, max_pixels).map(|(img, fingerprint)| {
                    let working = prep.to_working(&img);
                    let bytes = working.as_raw().len() as u64;
                    let before = used.fetch_add(bytes, Ordering::Relaxed);
                    let kept = if before + bytes <= budget_bytes {
                        Some(Arc::new(working))
                    } else {
                        used.fetch_sub(bytes, Ordering::Relaxed);
                        None
                    };
                    (kept, fingerprint)
                });
                if !progress(done.fetch_add(1, Ordering::Relaxed) + 1, paths.len()) {
                    halted.store(true, Ordering::Relaxed);
                }
                (path.clone(), decoded)
            })
            .collect();
        if halted.into_inner() {
            return None;
        }
        let mut images = HashMap::with_capacity(results.len());
        let mut fingerprints = HashMap::with_capacity(results.len());
        let mut skipped = Vec::new();
        for (path, result) in results {
            match result {
                Ok((img, fingerprint)) => {
                    fingerprints.insert(path.clone(), fingerprint);
                    images.insert(path, img);
                }
                Err(reason) => skipped.push(Skipped { path, reason }),
            }
        }
        let store = Self {
            prep,
            augment,
            seed,
            max_pixels,
            images,
            fingerprints,
        };
        Some((store, skipped))
    }

    /// The fingerprint of every usable image.
    pub fn fingerprints(&self) -> &HashMap<PathBuf, Fingerprint> {
        &self.fingerprints
    }

    /// The eval transform this store applies.
    pub fn preprocess(&self) -> &Preprocess {
        &self.prep
    }

    /// Number of images held in memory (the rest are decoded again when used).
    pub fn cached(&self) -> usize {
        self.images.values().filter(|i| i.is_some()).count()
    }

    fn working(&self, path: &Path) -> Result<Arc<RgbImage>, String> {
        match self.images.get(path) {
            Some(Some(img)) => Ok(img.clone()),
            _ => decode_rgb(path, self.max_pixels).map(|img| Arc::new(self.prep.to_working(&img))),
        }
    }

    /// Writes one sample's network input into `out`.
    fn render(&self, sample: &Sample, mode: BatchMode, out: &mut [f32]) -> Result<(), String> {
        let img = self.working(&sample.path)?;
        match mode {
            BatchMode::Eval => self.prep.crop_normalize(&img, out),
            BatchMode::Augment { epoch } => {
                let seed =
                    self.seed ^ path_hash(&sample.path) ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407);
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let params = AugmentParams::sample(
                    &self.augment,
                    img.width(),
                    img.height(),
                    self.prep.size,
                    &mut rng,
                );
                augment::render(&img, &params, &self.prep, out);
            }
        }
        Ok(())
    }

    /// What the network sees of `sample`: its eval input, then its augmented input in each of
    /// `epochs` — the same renders [`ImageStore::batch`] makes — as pictures.
    pub fn preview(
        &self,
        sample: &Sample,
        epochs: std::ops::RangeInclusive<u64>,
    ) -> Result<(RgbImage, Vec<RgbImage>), String> {
        let mut out = vec![0f32; self.prep.input_len()];
        let mut picture = |mode| {
            self.render(sample, mode, &mut out)
                .map(|()| self.prep.to_rgb(&out))
        };
        let original = picture(BatchMode::Eval)?;
        let variants = epochs
            .map(|epoch| picture(BatchMode::Augment { epoch }))
            .collect::<Result<_, _>>()?;
        Ok((original, variants))
    }

    /// The `[N, 3, size, size]` f32 input of `samples`.
    pub fn batch(
        &self,
        samples: &[&Sample],
        mode: BatchMode,
        device: &Device,
    ) -> anyhow::Result<Tensor> {
        let len = self.prep.input_len();
        let mut data = vec![0f32; samples.len() * len];
        data.par_chunks_mut(len)
            .zip(samples.par_iter())
            .try_for_each(|(out, s)| {
                self.render(s, mode, out)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", s.path.display()))
            })?;
        let size = self.prep.size as usize;
        Ok(Tensor::from_vec(
            data,
            (samples.len(), 3, size, size),
            device,
        )?)
    }
}

/// FNV-1a of a path's bytes: a stable per-image seed component on every platform.
fn path_hash(path: &Path) -> u64 {
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::data::preprocess::Interpolation;

    #[test]
    fn budget_limits_what_is_cached_and_batches_still_build() {
        let t = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..4)
            .map(|i| {
                let p = t.path().join(format!("{i}.png"));
                crate::data::decode::tests::gradient(40, 30)
                    .save(&p)
                    .unwrap();
                p
            })
            .collect();
        let mut all = paths.clone();
        all.push(t.path().join("missing.png"));
        let prep = Preprocess {
            size: 16,
            resize: 18,
            squash: false,
            interpolation: Interpolation::Bicubic,
            mean: [0.5; 3],
            std: [0.5; 3],
        };
        let one_image = 24 * 18 * 3;
        let (store, skipped) = ImageStore::load(
            &all,
            prep,
            Config::default().augment,
            0,
            1 << 30,
            2 * one_image,
            &|_, _| true,
        )
        .unwrap();
        assert_eq!(skipped.len(), 1);
        assert_eq!(store.cached(), 2);
        let samples: Vec<Sample> = paths.iter().map(|p| Sample::new(p.clone(), 1)).collect();
        let refs: Vec<&Sample> = samples.iter().collect();
        let x = store.batch(&refs, BatchMode::Eval, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[4, 3, 16, 16]);
        // In-memory and streamed images give the same eval input.
        let rows = x.flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
        assert!(rows.windows(2).all(|w| w[0] == w[1]));
        let a = store
            .batch(&refs, BatchMode::Augment { epoch: 1 }, &Device::Cpu)
            .unwrap();
        let b = store
            .batch(&refs, BatchMode::Augment { epoch: 1 }, &Device::Cpu)
            .unwrap();
        let c = store
            .batch(&refs, BatchMode::Augment { epoch: 2 }, &Device::Cpu)
            .unwrap();
        let diff = |p: &Tensor, q: &Tensor| {
            (p - q)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert_eq!(diff(&a, &b), 0.0);
        assert!(diff(&a, &c) > 0.0);

        // The preview shows exactly those inputs.
        let (original, variants) = store.preview(&samples[0], 1..=2).unwrap();
        let (scale, shift) = store.preprocess().affine();
        let matches = |picture: &RgbImage, batch: &Tensor| {
            let row = batch
                .get(0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let plane = 16 * 16;
            picture.enumerate_pixels().all(|(px, py, p)| {
                (0..3).all(|ch| {
                    let v = row[ch * plane + (py * 16 + px) as usize];
                    (p[ch] as f32 - (v - shift[ch]) / scale[ch]).abs() <= 0.5001
                })
            })
        };
        assert!(matches(&original, &x));
        assert!(matches(&variants[0], &a) && matches(&variants[1], &c));
        assert_ne!(variants[0], variants[1]);
    }
}
