//! `tltui inspect`: what the dataset pipeline sees, as a table or one JSON object.

use crate::cli::InspectArgs;
use crate::data::{check_images, ClassCount, Dataset, Skipped};
use serde::Serialize;
use std::path::PathBuf;

/// The inspect report.
#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(serialize_with = "crate::data::lossy_path")]
    pub dataset: PathBuf,
    /// The class folder chosen, relative to the dataset.
    #[serde(serialize_with = "crate::data::lossy_path")]
    pub class_root: PathBuf,
    pub given_split: bool,
    pub classes: Vec<ClassCount>,
    pub skipped: Vec<Skipped>,
    pub ignored: usize,
    pub warnings: Vec<String>,
}

/// Builds the report: discovery, split, then every image decoded once to find unusable files.
pub fn report(args: &InspectArgs) -> anyhow::Result<Report> {
    let config = args.data.config()?;
    let mut ds = Dataset::open(
        &args.dataset,
        args.data.classes_dir.as_deref(),
        config.data.val_fraction,
        config.data.seed,
    )?;
    let paths: Vec<PathBuf> = ds
        .train
        .iter()
        .chain(&ds.val)
        .map(|s| s.path.clone())
        .collect();
    let max_pixels = (config.data.max_megapixels * 1e6) as u64;
    let mut warnings = ds.remove_unusable(check_images(&paths, max_pixels))?;
    warnings.extend(ds.duplicates_across_classes());
    let class_root = ds
        .class_root
        .strip_prefix(&args.dataset)
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|_| ds.class_root.clone());
    Ok(Report {
        dataset: args.dataset.clone(),
        class_root,
        given_split: ds.given_split,
        classes: ds.class_counts(),
        skipped: ds.skipped,
        ignored: ds.ignored,
        warnings,
    })
}

/// Runs `tltui inspect`.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let r = report(args)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!("dataset     {}", r.dataset.display());
    println!(
        "class root  {}{}",
        r.class_root.display(),
        if r.given_split {
            "  (own train/val split)"
        } else {
            ""
        }
    );
    println!(
        "\n{:<24} {:>8} {:>8} {:>8}",
        "class", "train", "val", "total"
    );
    for c in &r.classes {
        println!(
            "{:<24} {:>8} {:>8} {:>8}",
            c.name,
            c.train,
            c.val,
            c.train + c.val
        );
    }
    let (t, v) = r
        .classes
        .iter()
        .fold((0, 0), |(t, v), c| (t + c.train, v + c.val));
    println!("{:<24} {:>8} {:>8} {:>8}", "all", t, v, t + v);
    println!("\nignored (hidden or not images): {}", r.ignored);
    println!("skipped (unusable): {}", r.skipped.len());
    for s in &r.skipped {
        println!("  {}: {}", s.path.display(), s.reason);
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    Ok(())
}
