//! `image.resize`: resamples images to a new size.

use anyhow::{anyhow, bail, Result};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, ValueType};

use super::interpolate::{center_crop, crop, interpolate, Mode};
use super::planes::{alloc, Planes};
use super::resample::{resample_plane, Filter, Taps};

/// Filters computed as torch's `F.interpolate` (ComfyUI's ImageScale methods).
const TORCH_FILTERS: &[(&str, Mode)] = &[
    ("nearest-exact", Mode::NearestExact),
    ("torch-bilinear", Mode::Bilinear),
    ("torch-bicubic", Mode::Bicubic),
    ("area", Mode::Area),
];

/// Every filter name.
const FILTERS: &[&str] = &["lanczos", "bicubic", "bilinear", "nearest", "nearest-exact", "torch-bilinear", "torch-bicubic", "area"];

pub(crate) struct Resize {
    spec: OpSpec,
}

impl Resize {
    pub(crate) fn new() -> Self {
        Resize {
            spec: OpSpec {
                name: "image.resize".into(),
                version: 2,
                doc: "Resizes images. Give `scale`, or `width` and/or `height`: with only one \
                      of them the other follows the aspect ratio (rounded, at least 1). \
                      Separable resampling in f32 (pixel centres aligned, the filter widened \
                      when shrinking, so downscaling does not alias); results are clamped to \
                      [0, 1]. The sizes round half to even, as Python's `round` (and so ComfyUI) \
                      does. The `nearest-exact`, `torch-bilinear`, `torch-bicubic` (A = -0.75) and `area` \
                      filters are torch's `F.interpolate` modes (align_corners false, no antialiasing, not \
                      clamped), which ComfyUI's ImageScale uses. `crop: center` first cuts the image to \
                      the new aspect ratio, as ComfyUI does."
                    .into(),
                inputs: vec![
                    PortSpec::new("image", ValueType::Image, "the image or batch of images to resize"),
                    PortSpec::optional("width", ValueType::Int, "the new width in pixels"),
                    PortSpec::optional("height", ValueType::Int, "the new height in pixels"),
                    PortSpec::optional(
                        "scale",
                        ValueType::Float,
                        "the size factor for both sides (e.g. 2.0 doubles them); not with width or height",
                    ),
                    PortSpec::with_default(
                        "filter",
                        ValueType::Text,
                        "lanczos",
                        "lanczos (Lanczos3, sharpest), bicubic (Catmull-Rom), bilinear, nearest (pixel repeat), \
                         or torch's nearest-exact, torch-bilinear, torch-bicubic, area",
                    )
                    .one_of(FILTERS),
                    PortSpec::with_default("crop", ValueType::Text, "disabled", "`center`: cut to the new aspect ratio first")
                        .one_of(&["disabled", "center"]),
                ],
                outputs: vec![PortSpec::new("image", ValueType::Image, "the resized image")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for Resize {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let filter_name = inputs.opt_text("filter")?.unwrap_or("lanczos");
        let torch = TORCH_FILTERS.iter().find(|(n, _)| *n == filter_name).map(|(_, m)| *m);
        let filter = match torch {
            Some(_) => None,
            None => Some(
                Filter::parse(filter_name)
                    .ok_or_else(|| anyhow!("input `filter` is `{filter_name}`; use one of {}", FILTERS.join(", ")))?,
            ),
        };
        let mut planes = Planes::from_tensor(inputs.tensor("image")?, "image")?;
        let (out_w, out_h) = target_size(
            (planes.w, planes.h),
            inputs.opt_int("width")?,
            inputs.opt_int("height")?,
            inputs.opt_float("scale")?,
        )?;

        flow_engine::limits::check_image_size(out_w as u64, out_h as u64, "the resized image")?;
        let count = planes.n * planes.c;
        let out_plane = out_w
            .checked_mul(out_h)
            .filter(|p| p.checked_mul(count).is_some())
            .ok_or_else(|| anyhow!("a {out_w}x{out_h} image is too large"))?;
        if inputs.opt_text("crop")? == Some("center") {
            let (mx, my) = center_crop((planes.w, planes.h), (out_w, out_h));
            let data = crop(&planes.data, count, (planes.h, planes.w), (mx, my));
            planes = Planes::new(planes.n, planes.c, planes.h - 2 * my, planes.w - 2 * mx, data);
        }
        let data = match (torch, filter) {
            (Some(mode), _) => {
                flow_engine::limits::check_memory(count as u64 * out_plane as u64 * 4, &format!("a {out_w}x{out_h} image"))?;
                ctx.check_cancelled()?;
                interpolate(&planes.data, count, (planes.h, planes.w), (out_h, out_w), mode)
            }
            (None, Some(filter)) => {
                let mut data = alloc(count * out_plane, &format!("a {out_w}x{out_h} image"))?;
                let cols = Taps::new(filter, planes.w, out_w);
                let rows = Taps::new(filter, planes.h, out_h);
                let in_plane = planes.w * planes.h;
                for (i, (src, dst)) in planes.data.chunks_exact(in_plane).zip(data.chunks_exact_mut(out_plane)).enumerate() {
                    ctx.check_cancelled()?;
                    dst.copy_from_slice(&resample_plane(src, planes.w, planes.h, &cols, &rows));
                    ctx.progress(i as u64 + 1, count as u64);
                }
                data
            }
            (None, None) => unreachable!("a filter is either torch's or a resampling filter"),
        };
        let resized = Planes::new(planes.n, planes.c, out_h, out_w, data);
        Ok(Outputs::single("image", resized.into_value(ctx.device())?))
    }
}

/// The output (width, height) of an image of `size` from the inputs.
fn target_size(
    (w, h): (usize, usize),
    width: Option<i64>,
    height: Option<i64>,
    scale: Option<f64>,
) -> Result<(usize, usize)> {
    let side = |port: &str, v: i64| -> Result<usize> {
        usize::try_from(v)
            .ok()
            .filter(|&v| v >= 1)
            .ok_or_else(|| anyhow!("input `{port}` should be at least 1, got {v}"))
    };
    // `len * factor`, rounded half to even (Python's round), at least 1 (the cast saturates; huge sizes fail
    // when the output is allocated).
    let times = |len: usize, factor: f64| (len as f64 * factor).round_ties_even().max(1.0) as usize;
    match (width, height, scale) {
        (None, None, None) => bail!("image.resize needs `width`, `height` or `scale`; none was given"),
        (Some(_), _, Some(s)) | (_, Some(_), Some(s)) => bail!(
            "give either `scale` or `width`/`height`, not both (got scale {s}, width {}, height {})",
            width.map_or("-".to_string(), |v| v.to_string()),
            height.map_or("-".to_string(), |v| v.to_string())
        ),
        (None, None, Some(s)) => {
            if !(s.is_finite() && s > 0.0) {
                bail!("input `scale` should be a positive number, got {s}");
            }
            Ok((times(w, s), times(h, s)))
        }
        (Some(wd), None, None) => {
            let wd = side("width", wd)?;
            Ok((wd, times(h, wd as f64 / w as f64)))
        }
        (None, Some(ht), None) => {
            let ht = side("height", ht)?;
            Ok((times(w, ht as f64 / h as f64), ht))
        }
        (Some(wd), Some(ht), None) => Ok((side("width", wd)?, side("height", ht)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_inputs() {
        let size = (64, 48);
        assert_eq!(target_size(size, None, None, Some(2.0)).unwrap(), (128, 96));
        assert_eq!(target_size(size, None, None, Some(0.001)).unwrap(), (1, 1));
        assert_eq!(target_size(size, Some(32), None, None).unwrap(), (32, 24));
        assert_eq!(
            target_size(size, None, Some(100), None).unwrap(),
            (133, 100)
        );
        assert_eq!(
            target_size(size, Some(10), Some(20), None).unwrap(),
            (10, 20)
        );
    }

    #[test]
    fn bad_combinations_are_errors() {
        let err = |w, h, s| target_size((64, 48), w, h, s).unwrap_err().to_string();
        assert_eq!(
            err(None, None, None),
            "image.resize needs `width`, `height` or `scale`; none was given"
        );
        assert_eq!(
            err(Some(10), None, Some(2.0)),
            "give either `scale` or `width`/`height`, not both (got scale 2, width 10, height -)"
        );
        assert_eq!(
            err(None, None, Some(-1.0)),
            "input `scale` should be a positive number, got -1"
        );
        assert_eq!(
            err(None, None, Some(f64::NAN)),
            "input `scale` should be a positive number, got NaN"
        );
        assert_eq!(
            err(Some(0), None, None),
            "input `width` should be at least 1, got 0"
        );
        assert_eq!(
            err(Some(5), Some(-3), None),
            "input `height` should be at least 1, got -3"
        );
    }
}
