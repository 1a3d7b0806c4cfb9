//! `image.thumbnail` (CPU): decodes an image from the files directory, resizes it to fit
//! within width x height keeping its aspect ratio, and writes it as PNG or JPEG according
//! to the output's extension. Progress per stage; the output appears atomically (written
//! to a new temporary file, then renamed). Decoding is bounded: an image whose pixels
//! would take more than [`MAX_DECODED_BYTES`] is refused from its header, before any of
//! it is allocated, and a thumbnail is never larger than its source.

use std::path::Path;
use std::sync::Arc;

use image::{ImageFormat, ImageReader};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::files::FilesDir;
use super::registry::{ArgsError, JobKind};
use crate::exec::{HandlerError, JobContext, JobResult};
use crate::model::job::Progress;

const MAX_SIDE: u32 = 10_000;
/// The most memory one decode may allocate: a 16-megapixel RGBA image. A job holds its
/// source and a thumbnail no larger, so at most twice this per CPU thread.
pub const MAX_DECODED_BYTES: u64 = 64 << 20;
/// The widest and tallest source accepted.
const MAX_SOURCE_SIDE: u32 = 20_000;

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
    files.check_output("output", &a.output)?;
    Ok(())
}

/// Decodes within the limits above, refusing an oversized image from its header.
fn decode(input: std::fs::File) -> image::ImageResult<image::DynamicImage> {
    let mut reader = ImageReader::new(std::io::BufReader::new(input)).with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SOURCE_SIDE);
    limits.max_image_height = Some(MAX_SOURCE_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    reader.decode()
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
    let format = output_format(&args.output).map_err(HandlerError::permanent)?;

    ctx.progress(Progress::fraction(0.0).with_message("decoding"));
    let source = decode(input)
        .map_err(|e| HandlerError::permanent(format!("cannot decode {}: {e}", args.input)))?;
    ctx.check_cancelled()?;

    ctx.progress(Progress::fraction(0.4).with_message("resizing"));
    // Never upscale: a 1x1 source must not become a 10000x10000 buffer.
    let (width, height) = (
        args.width.min(source.width()),
        args.height.min(source.height()),
    );
    // Box sampling straight into the output: no floating-point copy of the source, which
    // for a large image would take 16 bytes per source pixel.
    let mut thumb = source.thumbnail(width, height);
    if format == ImageFormat::Jpeg {
        // JPEG has no alpha channel.
        thumb = thumb.to_rgb8().into();
    }
    ctx.check_cancelled()?;

    ctx.progress(Progress::fraction(0.8).with_message("encoding"));
    let output = files
        .output("output", &args.output, &ctx.id().to_string())
        .map_err(HandlerError::permanent)?;
    let mut writer = std::io::BufWriter::new(&output.file);
    thumb
        .write_to(&mut writer, format)
        .map_err(|e| HandlerError::failed(format!("cannot encode: {e}")))?;
    writer.into_inner().map_err(|e| e.into_error())?;
    output.persist()?;
    ctx.progress(Progress::fraction(1.0).with_message("written"));
    Ok(json!({
        "output": args.output,
        "width": thumb.width(),
        "height": thumb.height(),
        "source_width": source.width(),
        "source_height": source.height(),
    }))
}
