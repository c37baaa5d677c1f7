//! `tltui backbones`: the supported architectures with their default Hub repository, timm's
//! parameter count, native input size and the speeds `tltui bench --record` measured, all kept
//! in `config/backbones.toml`.

use crate::cli::BackbonesArgs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// `config/backbones.toml` as built into the binary.
pub const BACKBONES_TOML: &str = include_str!("../config/backbones.toml");

/// The comment block `record` writes at the top of the file.
const HEADER: &str = "\
# What `tltui backbones` lists for each supported architecture.
#
# hub, timm_params, input: timm 1.0.31's default pretrained repository, parameter count (with its
# 1000-class classifier) and native input side, from `timm.create_model(ARCH)`.
# forward_img_per_s, train_img_per_s, measured: written by
# `tltui bench --weights|--backbone … DATASET --record config/backbones.toml` (release build) on
# the machine named in `measured`; absent when not measured.
";

/// One architecture's entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneInfo {
    /// Default pretrained repository on the Hub.
    pub hub: String,
    /// timm's parameter count, 1000-class classifier included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timm_params: Option<u64>,
    /// Native input side in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<usize>,
    /// Backbone forward pass, images per second, measured by `tltui bench`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_img_per_s: Option<f64>,
    /// Fine-tune train step (every group trainable), images per second, measured by `tltui bench`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_img_per_s: Option<f64>,
    /// Where and how the speeds were measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured: Option<String>,
}

/// Entries by architecture name.
pub type Catalog = BTreeMap<String, BackboneInfo>;

/// Parses a catalog file's text.
pub fn parse(text: &str) -> anyhow::Result<Catalog> {
    Ok(toml::from_str(text)?)
}

/// Writes `arch`'s measured speeds into the catalog file at `path` (the file is rewritten in
/// its canonical form, entries in name order).
pub fn record(
    path: &Path,
    arch: &str,
    forward_img_per_s: f64,
    train_img_per_s: f64,
    measured: String,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut catalog = parse(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a backbone catalog: {e}", path.display()))?;
    let entry = catalog.get_mut(arch).ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no entry for {arch}; add its hub repository first",
            path.display()
        )
    })?;
    let round = |v: f64| (v * 10.0).round() / 10.0;
    entry.forward_img_per_s = Some(round(forward_img_per_s));
    entry.train_img_per_s = Some(round(train_img_per_s));
    entry.measured = Some(measured);
    std::fs::write(path, format!("{HEADER}\n{}", toml::to_string(&catalog)?))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// One row of the listing.
#[derive(Debug, Serialize)]
struct Row<'a> {
    architecture: &'a str,
    #[serde(flatten)]
    info: BackboneInfo,
}

/// `tltui backbones`: a table, or a JSON array.
pub fn run(args: &BackbonesArgs) -> anyhow::Result<()> {
    use std::io::Write;
    // Written, not printed: a closed pipe (`| head`) is an error, not a panic.
    let mut out = std::io::stdout().lock();
    let catalog = parse(BACKBONES_TOML)?;
    let rows: Vec<Row> = crate::model::SUPPORTED
        .iter()
        .map(|&architecture| Row {
            architecture,
            info: catalog.get(architecture).cloned().unwrap_or_default(),
        })
        .collect();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&rows)?)?;
        return Ok(());
    }
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_default();
    writeln!(
        out,
        "{:<22} {:<38} {:>8} {:>6} {:>10} {:>10}",
        "architecture", "default Hub repository", "params", "input", "forward/s", "train/s"
    )?;
    for r in &rows {
        let i = &r.info;
        writeln!(
            out,
            "{:<22} {:<38} {:>8} {:>6} {:>10} {:>10}",
            r.architecture,
            i.hub,
            i.timm_params
                .map(|p| format!("{:.2}M", p as f64 / 1e6))
                .unwrap_or_default(),
            i.input.map(|n| n.to_string()).unwrap_or_default(),
            opt(i.forward_img_per_s),
            opt(i.train_img_per_s),
        )?;
    }
    writeln!(
        out,
        "\nparams: timm's count with its 1000-class classifier. forward/s, train/s: images per second \
         measured on this machine by `tltui bench` (blank: not measured).\nOther ConvNeXt, ViT and \
         DeiT names are sized from their checkpoint."
    )?;
    let measured: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter_map(|r| r.info.measured.as_deref())
        .collect();
    for m in measured {
        writeln!(out, "measured: {m}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_covers_exactly_the_supported_architectures() {
        let catalog = parse(BACKBONES_TOML).unwrap();
        for arch in crate::model::SUPPORTED {
            let info = catalog
                .get(*arch)
                .unwrap_or_else(|| panic!("no entry for {arch}"));
            assert!(info.hub.starts_with("timm/"), "{arch}: {}", info.hub);
            assert!(info.hub.parse::<crate::hub::RepoId>().is_ok());
        }
        for arch in catalog.keys() {
            assert!(
                crate::model::SUPPORTED.contains(&arch.as_str()),
                "{arch} is not supported"
            );
        }
    }

    #[test]
    fn record_writes_speeds_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backbones.toml");
        std::fs::write(&path, BACKBONES_TOML).unwrap();
        record(&path, "convnext_atto", 12.34, 5.67, "test".into()).unwrap();
        let before = parse(BACKBONES_TOML).unwrap();
        let after = parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let atto = &after["convnext_atto"];
        assert_eq!(
            (atto.forward_img_per_s, atto.train_img_per_s),
            (Some(12.3), Some(5.7))
        );
        assert_eq!(atto.hub, before["convnext_atto"].hub);
        assert_eq!(after.len(), before.len());
        assert_eq!(after["resnet18"], before["resnet18"]);
        assert!(record(&path, "no_such_net", 1.0, 1.0, "test".into()).is_err());
    }
}
