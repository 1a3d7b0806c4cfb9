//! `image.thumbnail` (CPU): decodes an image from the files directory, resizes it to fit
//! within width x height keeping its aspect ratio, and writes it as PNG or JPEG according
//! to the output's extension. Progress per stage; the output appears atomically (written
//! to a temporary name, then renamed).

use std::path::Path;
use std::sync::Arc;

use image::{ImageFormat, ImageReader, imageops::FilterType};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::files::FilesDir;
use super::registry::{ArgsError, JobKind};
use crate::engine::job::Progress;
use crate::exec::{HandlerError, JobContext, JobResult};

const MAX_SIDE: u32 = 10_000;

/// Arguments of `image.thumbnail`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailArgs {
    /// The source image (PNG or JPEG), relative to the files directory.
    pub input: String,
    /// Where to write the thumbnail; its extension (.png, .jpg, .jpeg) picks the format.
    pub output: String,
    /// The largest width of the result, in pixels (1 to 10000).
    pub width: u32,
    /// The largest height of the result, in pixels (1 to 10000).
    pub height: u32,
}

/// The kind, confined to `files`.
pub fn kind(files: Arc<FilesDir>) -> JobKind {
    let checked = files.clone();
    JobKind::cpu(
        "image.thumbnail",
        "Resizes an image to fit width x height (aspect ratio kept) and writes it as PNG or JPEG.",
        move |ctx, args: ThumbnailArgs| run(&files, ctx, args),
    )
    .check_blocking(move |a: &ThumbnailArgs| check(&checked, a))
    .build()
}

fn check(files: &FilesDir, a: &ThumbnailArgs) -> Result<(), ArgsError> {
    for (field, side) in [("width", a.width), ("height", a.height)] {
        if !(1..=MAX_SIDE).contains(&side) {
            return Err(ArgsError::invalid(field, "must be between 1 and 10000"));
        }
    }
    output_format(&a.output)?;
    files.input("input", &a.input)?;
    files.output("output", &a.output)?;
    Ok(())
}

fn output_format(output: &str) -> Result<ImageFormat, ArgsError> {
    let ext = Path::new(output)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => Ok(ImageFormat::Png),
        Some("jpg" | "jpeg") => Ok(ImageFormat::Jpeg),
        _ => Err(ArgsError::invalid(
            "output",
            "must end in .png, .jpg or .jpeg",
        )),
    }
}

fn run(files: &FilesDir, ctx: &JobContext, args: ThumbnailArgs) -> JobResult {
    let input = files
        .input("input", &args.input)
        .map_err(HandlerError::permanent)?;
    let output = files
        .output("output", &args.output)
        .map_err(HandlerError::permanent)?;
    let format = output_format(&args.output).map_err(HandlerError::permanent)?;

    ctx.progress(Progress::fraction(0.0).with_message("decoding"));
    let source = ImageReader::open(&input)?
        .with_guessed_format()?
        .decode()
        .map_err(|e| HandlerError::permanent(format!("cannot decode {}: {e}", args.input)))?;
    ctx.check_cancelled()?;

    ctx.progress(Progress::fraction(0.4).with_message("resizing"));
    let mut thumb = source.resize(args.width, args.height, FilterType::Lanczos3);
    if format == ImageFormat::Jpeg {
        // JPEG has no alpha channel.
        thumb = thumb.to_rgb8().into();
    }
    ctx.check_cancelled()?;

    ctx.progress(Progress::fraction(0.8).with_message("encoding"));
    let partial = output.with_extension(format!("partial-{}", ctx.id()));
    thumb
        .save_with_format(&partial, format)
        .map_err(|e| HandlerError::failed(format!("cannot encode: {e}")))?;
    std::fs::rename(&partial, &output).inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    ctx.progress(Progress::fraction(1.0).with_message("written"));
    Ok(json!({
        "output": args.output,
        "width": thumb.width(),
        "height": thumb.height(),
        "source_width": source.width(),
        "source_height": source.height(),
    }))
}
