//! The `train_digits` example's training code and MNIST reader, included from
//! `examples/train_digits/`: training on the embedded digits learns (the loss falls, the test
//! accuracy is high), is bit-identical across runs and thread counts, and the IDX reader
//! parses valid files (plain and gzip) and rejects malformed ones with errors naming the file.

#[allow(dead_code)]
#[path = "../examples/train_digits/train.rs"]
mod train;

#[allow(dead_code)]
#[path = "../examples/train_digits/mnist.rs"]
mod mnist;

use std::io::Write;
use std::path::{Path, PathBuf};

use train::{load_digits, train, Config, Report, SplitMix64};

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn bits(r: &Report) -> Vec<u32> {
    r.params.iter().map(|v| v.to_bits()).collect()
}

fn assert_same(a: &Report, b: &Report) {
    assert_eq!(a.epochs, b.epochs, "per-epoch losses and accuracies differ");
    assert_eq!(a.confusion, b.confusion);
    assert!(bits(a) == bits(b), "weights differ");
    assert_eq!(a.fnv1a(), b.fnv1a());
    assert_eq!(a.checksum().to_bits(), b.checksum().to_bits());
}

#[test]
fn splitmix64_is_the_reference_generator() {
    // The first outputs of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
    let mut g = SplitMix64::new(0);
    assert_eq!(g.next_u64(), 0xe220_a839_7b1d_cdaf);
    assert_eq!(g.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    let mut g = SplitMix64::new(7);
    for n in [1usize, 2, 3, 10, 1000] {
        for _ in 0..100 {
            assert!(g.below(n) < n);
        }
    }
    let mut v: Vec<u32> = (0..100).collect();
    g.shuffle(&mut v);
    let mut s = v.clone();
    s.sort_unstable();
    assert_eq!(s, (0..100).collect::<Vec<_>>());
    assert_ne!(v, s);
}

#[test]
fn digits_split_is_stratified_and_standardized() {
    let d = load_digits(0).unwrap();
    assert_eq!(d.train_len() + d.test_len(), 1797);
    assert_eq!((d.features, d.classes), (64, 10));
    for c in 0..10 {
        let tr = d.train_y.iter().filter(|&&y| y == c).count();
        let te = d.test_y.iter().filter(|&&y| y == c).count();
        let want = (0.8 * (tr + te) as f64).round() as usize;
        assert_eq!(tr, want, "class {c}: {tr} train of {}", tr + te);
    }
    // Training features have mean 0 and std 1 (or are 0 when constant).
    let n = d.train_len() as f64;
    for j in 0..64 {
        let col = d.train_x.iter().skip(j).step_by(64).map(|&v| f64::from(v));
        let (s, s2) = col.fold((0.0, 0.0), |(s, s2), v| (s + v, s2 + v * v));
        let (mean, var) = (s / n, s2 / n - (s / n) * (s / n));
        assert!(mean.abs() < 1e-5, "feature {j}: mean {mean}");
        assert!(
            (var - 1.0).abs() < 1e-4 || var == 0.0,
            "feature {j}: var {var}"
        );
    }
    // The split depends on the seed, and only on it.
    assert_eq!(load_digits(0).unwrap().test_y, d.test_y);
    assert_ne!(load_digits(1).unwrap().test_x, d.test_x);
}

fn check_learns(cfg: &Config) {
    let data = load_digits(cfg.seed).unwrap();
    let r = train(cfg, &data, &mut ()).unwrap();
    let (first, last) = (r.epochs[0].loss, r.epochs.last().unwrap().loss);
    assert!(last < 0.5 * first, "loss {first} -> {last} with {cfg:?}");
    assert!(
        r.test_acc() >= 0.90,
        "test accuracy {} with {cfg:?}",
        r.test_acc()
    );
    assert_eq!(r.confusion.iter().sum::<u64>() as usize, data.test_len());
    let diag: u64 = (0..10).map(|i| r.confusion[i * 10 + i]).sum();
    assert_eq!(diag as usize, r.test_correct);
    assert_eq!(
        r.batches,
        (cfg.epochs * data.train_len().div_ceil(cfg.batch)) as u64
    );
}

#[test]
fn softmax_regression_learns() {
    check_learns(&Config {
        epochs: 5,
        ..Config::default()
    });
}

/// A learning rate that diverges stops training at the first non-finite loss with an error
/// that names the batch and suggests a smaller `--lr` (it used to finish with NaN weights,
/// 10% accuracy and exit 0).
#[test]
fn divergence_stops_with_an_error() {
    let data = load_digits(0).unwrap();
    for hidden in [0, 16] {
        let cfg = Config {
            epochs: 3,
            lr: 1e6,
            hidden,
            ..Config::default()
        };
        let mut obs = ();
        let e = match pool(1).install(|| train(&cfg, &data, &mut obs)) {
            Err(e) => e,
            Ok(r) => panic!("hidden {hidden}: trained to {:?}", r.epochs.last()),
        };
        assert!(e.contains("training diverged"), "{e}");
        assert!(e.contains("--lr"), "{e}");
    }
}

#[test]
fn hidden_layer_learns() {
    check_learns(&Config {
        epochs: 5,
        hidden: 32,
        seed: 3,
        ..Config::default()
    });
}

#[test]
fn same_seed_gives_bit_identical_weights() {
    let cfg = Config {
        epochs: 3,
        hidden: 16,
        seed: 11,
        ..Config::default()
    };
    let data = load_digits(cfg.seed).unwrap();
    let a = train(&cfg, &data, &mut ()).unwrap();
    let b = train(&cfg, &data, &mut ()).unwrap();
    assert_same(&a, &b);
    // Another seed gives other weights.
    let c = train(&Config { seed: 12, ..cfg }, &data, &mut ()).unwrap();
    assert_ne!(bits(&a), bits(&c));
}

#[test]
fn one_and_two_threads_give_identical_results() {
    let data = load_digits(5).unwrap();
    // The default model, and a wide hidden layer with large batches, whose GEMMs are big
    // enough to be split into tiles across the pool's threads.
    for cfg in [
        Config {
            epochs: 3,
            seed: 5,
            ..Config::default()
        },
        Config {
            epochs: 3,
            hidden: 256,
            batch: 512,
            lr: 0.1,
            seed: 5,
            ..Config::default()
        },
    ] {
        let one = pool(1).install(|| train(&cfg, &data, &mut ()).unwrap());
        let two = pool(2).install(|| train(&cfg, &data, &mut ()).unwrap());
        assert_same(&one, &two);
    }
}

// ---- MNIST IDX reader ----

/// A fresh, empty directory under the system's temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("train_digits_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [mnist::IMAGES_MAGIC, count, rows, cols] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [mnist::LABELS_MAGIC, labels.len() as u32] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(labels);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

const PIXELS: [u8; 8] = [0, 255, 17, 3, /* image 2 */ 9, 8, 7, 128];

/// Writes the four files of a tiny valid MNIST (2 training and 1 test image of 2x2) to `dir`.
fn write_tiny(dir: &Path, gz: bool) {
    let files = [
        (mnist::TRAIN_IMAGES, idx_images(2, 2, 2, &PIXELS)),
        (mnist::TRAIN_LABELS, idx_labels(&[3, 7])),
        (mnist::TEST_IMAGES, idx_images(1, 2, 2, &[1, 2, 3, 4])),
        (mnist::TEST_LABELS, idx_labels(&[9])),
    ];
    for (name, bytes) in files {
        if gz {
            std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn mnist_reader_parses_tiny_files_plain_and_gzip() {
    for gz in [false, true] {
        let dir = temp_dir(if gz { "tiny_gz" } else { "tiny_plain" });
        write_tiny(&dir, gz);
        let m = mnist::load_dir(&dir).unwrap();
        let ti = &m.train_images;
        assert_eq!((ti.count, ti.rows, ti.cols), (2, 2, 2));
        assert_eq!(ti.pixels, PIXELS);
        assert_eq!(m.train_labels, [3, 7]);
        assert_eq!(m.test_images.pixels, [1, 2, 3, 4]);
        assert_eq!(m.test_labels, [9]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // gzip is detected by its magic bytes, not by the name.
    let dir = temp_dir("gz_no_suffix");
    let p = dir.join("images");
    std::fs::write(&p, gzip(&idx_images(2, 2, 2, &PIXELS))).unwrap();
    assert_eq!(mnist::read_images(&p).unwrap().pixels, PIXELS);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mnist_reader_rejects_malformed_files() {
    let dir = temp_dir("bad");
    let check = |name: &str, bytes: Vec<u8>, images: bool, want: &str| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = if images {
            mnist::read_images(&p).unwrap_err()
        } else {
            mnist::read_labels(&p).unwrap_err()
        };
        let msg = e.to_string();
        assert_eq!(e.path, p);
        assert!(msg.contains(name), "{msg:?} does not name the file");
        assert!(msg.contains(want), "{msg:?} does not say {want:?}");
    };
    // A label file where images are expected, and the other way round.
    check(
        "swapped",
        idx_labels(&[1, 2]),
        true,
        "bad magic number 0x00000801",
    );
    check(
        "swapped2",
        idx_images(1, 1, 1, &[0]),
        false,
        "bad magic number 0x00000803",
    );
    check(
        "bogus",
        b"not an idx file at all".to_vec(),
        true,
        "bad magic number",
    );
    check("short", vec![0, 0], true, "too short");
    check(
        "header",
        vec![0, 0, 8, 3, 0, 0, 0, 1],
        true,
        "truncated header",
    );
    check(
        "truncated",
        idx_images(2, 2, 2, &PIXELS[..7]),
        true,
        "truncated",
    );
    check(
        "trailing",
        idx_images(1, 2, 2, &PIXELS),
        true,
        "trailing bytes",
    );
    check("zero", idx_images(1, 0, 2, &[]), true, "dimension 2 is 0");
    check(
        "lab_short",
        idx_labels(&[1, 2])[..9].to_vec(),
        false,
        "truncated",
    );
    check(
        "badgz",
        vec![0x1f, 0x8b, 8, 0, 1, 2, 3],
        true,
        "gzip data is corrupt",
    );

    // Whole directories: a missing file, labels that disagree with the images.
    let missing = temp_dir("missing");
    write_tiny(&missing, false);
    std::fs::remove_file(missing.join(mnist::TEST_LABELS)).unwrap();
    let e = mnist::load_dir(&missing).unwrap_err();
    assert!(e.to_string().contains(mnist::TEST_LABELS), "{e}");
    assert!(e.to_string().contains("missing"), "{e}");

    let mismatch = temp_dir("mismatch");
    write_tiny(&mismatch, false);
    std::fs::write(mismatch.join(mnist::TRAIN_LABELS), idx_labels(&[1, 2, 3])).unwrap();
    let e = mnist::load_dir(&mismatch).unwrap_err();
    assert!(e.to_string().contains(mnist::TRAIN_LABELS), "{e}");
    assert!(e.to_string().contains("3 labels for 2 images"), "{e}");

    std::fs::write(mismatch.join(mnist::TRAIN_LABELS), idx_labels(&[1, 12])).unwrap();
    let e = mnist::load_dir(&mismatch).unwrap_err();
    assert!(e.to_string().contains("label 1 is 12"), "{e}");

    for d in [dir, missing, mismatch] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
