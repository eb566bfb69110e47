//! A reader for the MNIST IDX files (http://yann.lecun.com/exdb/mnist/ format), plain or
//! gzip-compressed (detected by the magic bytes `1f 8b`, whatever the file is called).
//!
//! ```text
//! images: u32 0x00000803, u32 count, u32 rows, u32 cols, count*rows*cols u8 pixels
//! labels: u32 0x00000801, u32 count, count u8 labels
//! ```
//!
//! All integers are big-endian. The reader checks the magic number, that the dimensions are
//! positive, and that the file holds exactly the bytes the header announces; every error names
//! the file and the problem.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// The magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The four files of the standard distribution, without the optional `.gz`.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// Training labels.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// Test images.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// Test labels.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// A problem with one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxError {
    /// The file (or, when it is missing, the path looked for).
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for IdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for IdxError {}

/// An IDX image file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count * rows * cols` pixels, image after image, row-major.
    pub pixels: Vec<u8>,
}

/// The four MNIST files.
#[derive(Clone, Debug)]
pub struct Mnist {
    /// Training images.
    pub train_images: IdxImages,
    /// Training labels (one per image, `0..=9`).
    pub train_labels: Vec<u8>,
    /// Test images (same image size as the training images).
    pub test_images: IdxImages,
    /// Test labels.
    pub test_labels: Vec<u8>,
}

/// Decompresses `bytes` if they start with the gzip magic `1f 8b` (all members), else returns
/// them unchanged.
///
/// # Errors
/// The decoder's message for corrupt gzip data.
pub fn gunzip_if_gzip(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip data is corrupt: {e}"))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks the magic number, the header length and the dimensions; returns the dimensions and
/// the payload.
fn parse_header<'a>(
    bytes: &'a [u8],
    magic: u32,
    kind: &str,
    ndims: usize,
) -> Result<(Vec<usize>, &'a [u8]), String> {
    let header = 4 + 4 * ndims;
    if bytes.len() < 4 {
        return Err(format!(
            "too short for an IDX file ({} bytes; the header alone is {header})",
            bytes.len()
        ));
    }
    let m = be_u32(bytes, 0);
    if m != magic {
        return Err(format!(
            "bad magic number 0x{m:08x}, expected 0x{magic:08x} for an IDX {kind} file"
        ));
    }
    if bytes.len() < header {
        return Err(format!(
            "truncated header: {} bytes, an IDX {kind} header is {header}",
            bytes.len()
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| be_u32(bytes, 4 + 4 * i) as usize)
        .collect();
    if let Some(i) = dims.iter().position(|&v| v == 0) {
        return Err(format!("dimension {} is 0 (dimensions {dims:?})", i + 1));
    }
    let need = dims
        .iter()
        .try_fold(1usize, |a, &v| a.checked_mul(v))
        .ok_or_else(|| format!("dimensions {dims:?} overflow"))?;
    let payload = &bytes[header..];
    if payload.len() != need {
        let dims_s: Vec<String> = dims.iter().map(|v| v.to_string()).collect();
        return Err(format!(
            "the header announces {} = {need} data bytes but the file holds {} ({})",
            dims_s.join(" x "),
            payload.len(),
            if payload.len() < need {
                "truncated"
            } else {
                "trailing bytes"
            }
        ));
    }
    Ok((dims, payload))
}

/// Parses an (uncompressed) IDX image file.
///
/// # Errors
/// A message describing the problem.
pub fn parse_images(bytes: &[u8]) -> Result<IdxImages, String> {
    let (dims, payload) = parse_header(bytes, IMAGES_MAGIC, "image", 3)?;
    Ok(IdxImages {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels: payload.to_vec(),
    })
}

/// Parses an (uncompressed) IDX label file.
///
/// # Errors
/// A message describing the problem.
pub fn parse_labels(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (_, payload) = parse_header(bytes, LABELS_MAGIC, "label", 1)?;
    Ok(payload.to_vec())
}

fn read_file(path: &Path) -> Result<Vec<u8>, IdxError> {
    let err = |problem: String| IdxError {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    gunzip_if_gzip(bytes).map_err(err)
}

/// Reads an IDX image file, plain or gzip.
///
/// # Errors
/// An [`IdxError`] naming the file.
pub fn read_images(path: &Path) -> Result<IdxImages, IdxError> {
    parse_images(&read_file(path)?).map_err(|problem| IdxError {
        path: path.to_path_buf(),
        problem,
    })
}

/// Reads an IDX label file, plain or gzip.
///
/// # Errors
/// An [`IdxError`] naming the file.
pub fn read_labels(path: &Path) -> Result<Vec<u8>, IdxError> {
    parse_labels(&read_file(path)?).map_err(|problem| IdxError {
        path: path.to_path_buf(),
        problem,
    })
}

/// `dir/name`, else `dir/name.gz`.
///
/// # Errors
/// An [`IdxError`] when neither exists.
pub fn find(dir: &Path, name: &str) -> Result<PathBuf, IdxError> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(IdxError {
        path: plain,
        problem: format!(
            "missing (neither {name} nor {name}.gz is in {})",
            dir.display()
        ),
    })
}

/// Checks that `labels` has one label `0..=9` per image.
fn check_labels(path: &Path, labels: &[u8], images: &IdxImages) -> Result<(), IdxError> {
    let err = |problem| IdxError {
        path: path.to_path_buf(),
        problem,
    };
    if labels.len() != images.count {
        return Err(err(format!(
            "{} labels for {} images",
            labels.len(),
            images.count
        )));
    }
    if let Some(i) = labels.iter().position(|&l| l > 9) {
        return Err(err(format!("label {i} is {}, not a digit 0..9", labels[i])));
    }
    Ok(())
}

/// Reads the four standard MNIST files from `dir` (each plain or `.gz`) and checks that they
/// agree: one label `0..=9` per image, the same image size for training and test.
///
/// # Errors
/// An [`IdxError`] naming the file at fault.
pub fn load_dir(dir: &Path) -> Result<Mnist, IdxError> {
    let paths = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS].map(|name| find(dir, name));
    let [tri, trl, tei, tel] = paths;
    let (tri, trl, tei, tel) = (tri?, trl?, tei?, tel?);
    let train_images = read_images(&tri)?;
    let train_labels = read_labels(&trl)?;
    check_labels(&trl, &train_labels, &train_images)?;
    let test_images = read_images(&tei)?;
    if (test_images.rows, test_images.cols) != (train_images.rows, train_images.cols) {
        return Err(IdxError {
            path: tei,
            problem: format!(
                "images are {}x{} but the training images are {}x{}",
                test_images.rows, test_images.cols, train_images.rows, train_images.cols
            ),
        });
    }
    let test_labels = read_labels(&tel)?;
    check_labels(&tel, &test_labels, &test_images)?;
    Ok(Mnist {
        train_images,
        train_labels,
        test_images,
        test_labels,
    })
}
