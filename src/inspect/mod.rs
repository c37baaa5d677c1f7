//! `tltui inspect`: what the dataset pipeline sees, as a table or one JSON object.

pub mod label_issues;

use crate::cli::InspectArgs;
use crate::data::discovery::relative_to;
use crate::data::{ClassCount, DataReport, Dataset, Skipped, SplitOptions};
use serde::Serialize;
use std::path::PathBuf;

/// The inspect report.
#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(serialize_with = "crate::data::lossy_path")]
    pub dataset: PathBuf,
    /// The class folder chosen, relative to the dataset (`.` for the dataset folder itself).
    #[serde(serialize_with = "crate::data::lossy_path")]
    pub class_root: PathBuf,
    /// The rule that labelled the images (`class folders`, `labels from file names: …`, …).
    pub source: String,
    /// One class an image, or any number of labels.
    pub task: crate::data::Task,
    pub given_split: bool,
    pub classes: Vec<ClassCount>,
    pub skipped: Vec<Skipped>,
    pub ignored: usize,
    pub warnings: Vec<String>,
    /// The class-root candidates, copies and leakage.
    #[serde(flatten)]
    pub data: DataReport,
    /// Every file, with `--files`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileEntry>>,
    /// With `--label-issues`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_issues: Option<crate::train::label_issues::LabelIssues>,
}

/// One file of the dataset and where the split put it.
#[derive(Debug, Serialize)]
pub struct FileEntry {
    #[serde(serialize_with = "crate::data::lossy_path")]
    pub path: PathBuf,
    /// Its class (multi-label: its labels, separated by spaces).
    pub class: String,
    /// `train` or `val`.
    pub split: &'static str,
    /// Files of one group (derived from one source, or copies) share this id.
    pub group: usize,
}

/// Builds the report: discovery, every image decoded once (unusable files, fingerprints),
/// groups, split and leakage.
pub fn report(args: &InspectArgs) -> anyhow::Result<Report> {
    let config = args.data.config.load(|c| args.model.apply(c))?;
    let (ds, issues) = if args.label_issues {
        let (ds, issues) = label_issues::find(args, &config)?;
        (ds, Some(issues))
    } else {
        let ds = Dataset::open(
            &args.dataset,
            &args.data.source.options(&config),
            &SplitOptions::of(&config.data),
            config.data.max_pixels(),
        )?;
        (ds, None)
    };
    if let (Some(path), Some(issues)) = (&args.write_labels, &issues) {
        let rows = label_issues::write_labels(path, &args.dataset, &ds, issues, args.fix)?;
        eprintln!(
            "wrote {} ({rows} images, {} flagged {}); train on it with --labels {}",
            path.display(),
            issues.flagged.len(),
            match args.fix {
                crate::cli::FixMode::Relabel => "relabelled",
                crate::cli::FixMode::Exclude => "left out",
            },
            path.display()
        );
    }
    let files = args.files.then(|| {
        let side = |samples: &[crate::data::Sample], split: &'static str| {
            samples
                .iter()
                .map(|s| FileEntry {
                    path: s.path.clone(),
                    class: ds.tag_list(s),
                    split,
                    group: ds.groups.get(&s.path).copied().unwrap_or_default(),
                })
                .collect::<Vec<_>>()
        };
        let mut all = side(&ds.train, "train");
        all.extend(side(&ds.val, "val"));
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all
    });
    Ok(Report {
        dataset: args.dataset.clone(),
        class_root: relative_to(&args.dataset, &ds.class_root),
        source: ds.rule.clone(),
        task: ds.task,
        given_split: ds.given_split,
        classes: ds.class_counts(),
        skipped: ds.skipped,
        ignored: ds.ignored,
        warnings: ds.warnings,
        data: ds.report,
        files,
        label_issues: issues,
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
    println!("labels      {}", r.source);
    for c in &r.data.candidates {
        let mark = if c.chosen { "used" } else { "passed over" };
        println!(
            "  {mark:<12} {} ({} images): {}",
            c.path.display(),
            c.images,
            c.reason
        );
    }
    let multi = r.task == crate::data::Task::MultiLabel;
    println!(
        "\n{:<24} {:>8} {:>8} {:>8}",
        if multi { "label" } else { "class" },
        "train",
        "val",
        "total"
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
    match &r.data.multi_label {
        Some(m) => {
            let (t, v) = (m.untagged_train, m.untagged_val);
            println!("{:<24} {:>8} {:>8} {:>8}", "(no label)", t, v, t + v);
            println!("multi-label: {}", m.summary());
            for p in &m.frequent_pairs {
                println!("  {p} images");
            }
        }
        None => println!("{:<24} {:>8} {:>8} {:>8}", "all", t, v, t + v),
    }
    println!("\nignored (hidden or not images): {}", r.ignored);
    println!("skipped (unusable): {}", r.skipped.len());
    for s in &r.skipped {
        println!("  {}: {}", s.path.display(), s.reason);
    }
    println!("duplicate groups: {}", r.data.duplicates.len());
    for g in &r.data.duplicates {
        let names: Vec<String> = g.files.iter().map(|f| f.display().to_string()).collect();
        println!("  {:?}: {}", g.kind, names.join(", "));
    }
    let leak = &r.data.leakage;
    println!(
        "validation images with a copy in training: {}",
        leak.val_images_with_train_twin
    );
    for p in &leak.pairs {
        println!(
            "  {} ~ {} (distance {})",
            p.val.display(),
            p.train.display(),
            p.distance
        );
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    if let Some(issues) = &r.label_issues {
        issues.write_text(&r.dataset, &mut std::io::stdout().lock())?;
    }
    if let Some(files) = &r.files {
        println!("\n{:<6} {:<6} {:<16} path", "split", "group", "class");
        for f in files {
            println!(
                "{:<6} {:<6} {:<16} {}",
                f.split,
                f.group,
                f.class,
                f.path.display()
            );
        }
    }
    Ok(())
}
