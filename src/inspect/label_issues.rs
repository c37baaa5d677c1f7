//! `tltui inspect --label-issues`: the dataset's images through the backbone once (the feature
//! cache), out-of-fold heads, confident learning, and a corrected label file.

use crate::cli::{FixMode, InspectArgs};
use crate::config::Config;
use crate::data::discovery::relative_to;
use crate::data::{discover_source, Dataset, ImageStore, Preprocess, SplitOptions};
use crate::model::{build_backbone, ModelConfig, Params};
use crate::train::features;
use crate::train::label_issues::{self, LabelIssues};
use anyhow::Context;
use std::path::Path;

/// Runs the finder over every image of the dataset at `args.dataset`.
pub fn find(args: &InspectArgs, config: &Config) -> anyhow::Result<(Dataset, LabelIssues)> {
    let weights = args.model.local_weights(config)?;
    let device = args.model.device.pick()?;
    let model_config = ModelConfig::from_file(
        &weights
            .parent()
            .unwrap_or(Path::new("."))
            .join("config.json"),
    )?;
    let (image_size, note) = model_config.image_size(config.data.image_size, &device);
    if let Some(note) = note {
        eprintln!("warning: {note}");
    }
    let prep = Preprocess::from_cfg(&model_config.pretrained_cfg, image_size)
        .map_err(anyhow::Error::msg)?;
    let (found, notes) = discover_source(
        &args.dataset,
        &args.data.source.options(config),
        std::sync::Arc::new(crate::hub::report_on_stderr),
    )?;
    anyhow::ensure!(
        found.tagging.is_none(),
        crate::train::label_issues::MULTI_LABEL_FINDER
    );
    let progress = |done: usize, total: usize| {
        progress_line("decoding", done, total);
        true
    };
    let (store, bad) = ImageStore::load(
        &found.files(),
        prep.clone(),
        config.augment.clone(),
        config.data.seed,
        config.data.max_pixels(),
        config.data.cache_memory_mb * 1024 * 1024,
        &progress,
    )
    .expect("decoding runs to the end when progress never stops it");
    let mut ds = Dataset::build(
        found,
        store.fingerprints(),
        bad,
        &SplitOptions::of(&config.data),
    )?;
    ds.warnings.splice(0..0, notes);

    let samples = features::cache_order(&ds.train, &ds.val);
    let cache = features::default_cache_dir().map(|dir| {
        let key = features::cache_key(&samples, &weights, &model_config.architecture, &prep);
        features::cache_path(&dir, &key)
    });
    let (all, status, warning) =
        features::load_or_compute(cache.as_deref(), samples.len(), &device, || {
            let (model_config, _) = model_config.clone().at_image_size(image_size)?;
            let backbone = build_backbone(&model_config, Params::load(&weights, &device)?)?;
            features::compute(
                backbone.as_ref(),
                &store,
                &samples,
                config.data.batch_size,
                &device,
                &mut |done| {
                    progress_line("features", done, samples.len());
                    Ok(())
                },
            )
        })?;
    if let Some(w) = warning {
        ds.warnings.push(w);
    }
    let issues = label_issues::find(&ds, &samples, &all, status, config, usize::from(args.folds))?;
    Ok((ds, issues))
}

/// One `\r` line of progress on stderr.
fn progress_line(what: &str, done: usize, total: usize) {
    if done.is_multiple_of(64) || done == total {
        eprint!("\r{what} {done}/{total}");
        if done == total {
            eprintln!();
        }
    }
}

/// Writes the dataset as a label file at `path` (`file_name,label`, names relative to the
/// dataset folder), with the suggestions applied or the flagged images left out. Returns the
/// number of rows written.
pub fn write_labels(
    path: &Path,
    dataset: &Path,
    ds: &Dataset,
    issues: &LabelIssues,
    fix: FixMode,
) -> anyhow::Result<usize> {
    let suggested: std::collections::HashMap<&Path, &str> = issues
        .flagged
        .iter()
        .map(|f| (f.path.as_path(), f.suggested.as_str()))
        .collect();
    let mut rows: Vec<(String, String)> = ds
        .train
        .iter()
        .chain(&ds.val)
        .filter_map(|s| {
            let given = ds.class_names[s.class()].as_str();
            let label = match (suggested.get(s.path.as_path()), fix) {
                (Some(_), FixMode::Exclude) => return None,
                (Some(better), FixMode::Relabel) => *better,
                (None, _) => given,
            };
            let name = relative_to(dataset, &s.path)
                .to_string_lossy()
                .replace('\\', "/");
            Some((name, label.to_string()))
        })
        .collect();
    rows.sort();
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(["file_name", "label"])?;
    for (name, label) in &rows {
        out.write_record([name, label])?;
    }
    let bytes = out.into_inner().context("writing the label file")?;
    crate::atomic::atomic_write(path, &bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(rows.len())
}
