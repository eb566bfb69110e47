//! Trains a digit classifier with the crate's kernels: softmax regression (the default) or a
//! one-hidden-layer ReLU network (`--hidden N`), by mini-batch SGD with momentum, on the UCI
//! handwritten digits embedded in the binary (or on MNIST with `--mnist DIR`).
//!
//! ```text
//! cargo run --release --example train_digits
//! cargo run --release --example train_digits -- --hidden 64
//! cargo run --release --example train_digits -- --mnist ~/data/mnist --epochs 5
//! ```
//!
//! Every run is deterministic for a given `--seed`: the same losses, accuracies and weights
//! (see the checksum line) for any `--threads`.

mod mnist;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use softmax_kernels::Isa;
use train::{Config, Dataset, EpochStats, Observer, Report};

const USAGE: &str = "\
train_digits: train a digit classifier with softmax-kernels

USAGE:
    cargo run --release --example train_digits -- [OPTIONS]

OPTIONS:
    --epochs N       passes over the training set [default: 20]
    --batch N        mini-batch size [default: 32]
    --lr X           SGD learning rate [default: 0.03]
    --momentum X     SGD momentum in [0, 1) [default: 0.9]
    --weight-decay X L2 weight decay (PyTorch's SGD weight_decay) [default: 0.003]
    --hidden N       hidden ReLU units; 0 = softmax regression [default: 0]
    --seed N         seed of the split, the initialization and the shuffles [default: 0]
    --threads N      rayon threads [default: the number of CPUs]
    --isa TIER       kernel tier: scalar, portable, avx2 or avx512
                     [default: SOFTMAX_KERNELS_ISA if set, else the fastest this CPU runs]
    --mnist DIR      train on MNIST: DIR holds train-images-idx3-ubyte,
                     train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
                     t10k-labels-idx1-ubyte (each may be gzipped, optionally named .gz)
    -h, --help       print this help

Without --mnist, trains on the embedded UCI digits (1,797 8x8 images, CC BY 4.0), split
80/20 per class with the seed. Results are identical for every --threads.
Exit status: 0 on success, 2 for a bad command line, 1 when the data cannot be read.
";

/// The parsed command line.
#[derive(Debug)]
struct Args {
    cfg: Config,
    threads: Option<usize>,
    mnist: Option<PathBuf>,
}

fn parse_num<T: std::str::FromStr>(opt: &str, v: &str, what: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{opt} expects {what}, got {v:?}"))
}

/// Parses the options; `Ok(None)` for `--help`.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args {
        cfg: Config::default(),
        threads: None,
        mnist: None,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (opt, inline) = match arg.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        const KNOWN: [&str; 10] = [
            "--weight-decay",
            "--epochs",
            "--batch",
            "--lr",
            "--momentum",
            "--hidden",
            "--seed",
            "--threads",
            "--isa",
            "--mnist",
        ];
        if !KNOWN.contains(&opt.as_str()) {
            return Err(if opt.starts_with('-') {
                format!("unknown option {opt:?}")
            } else {
                format!("unexpected argument {opt:?}")
            });
        }
        let v = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{opt} needs a value"))?,
        };
        let positive = "an integer >= 1";
        match opt.as_str() {
            "--epochs" => a.cfg.epochs = parse_num(&opt, &v, positive)?,
            "--batch" => a.cfg.batch = parse_num(&opt, &v, positive)?,
            "--hidden" => a.cfg.hidden = parse_num(&opt, &v, "an integer >= 0")?,
            "--seed" => a.cfg.seed = parse_num(&opt, &v, "an integer in 0..2^64")?,
            "--threads" => a.threads = Some(parse_num(&opt, &v, positive)?),
            "--weight-decay" => a.cfg.weight_decay = parse_num(&opt, &v, "a number >= 0")?,
            "--lr" => a.cfg.lr = parse_num(&opt, &v, "a number > 0")?,
            "--momentum" => a.cfg.momentum = parse_num(&opt, &v, "a number in [0, 1)")?,
            "--isa" => {
                a.cfg.isa = Some(v.parse::<Isa>().map_err(|_| {
                    format!("--isa expects scalar, portable, avx2 or avx512, got {v:?}")
                })?)
            }
            "--mnist" => {
                if v.is_empty() {
                    return Err("--mnist needs a directory".into());
                }
                a.mnist = Some(PathBuf::from(v))
            }
            _ => unreachable!("checked against KNOWN"),
        }
    }
    let c = &a.cfg;
    if c.epochs == 0 {
        return Err("--epochs expects an integer >= 1, got 0".into());
    }
    if c.batch == 0 {
        return Err("--batch expects an integer >= 1, got 0".into());
    }
    if a.threads == Some(0) {
        return Err("--threads expects an integer >= 1, got 0".into());
    }
    if !(c.lr.is_finite() && c.lr > 0.0) {
        return Err(format!("--lr expects a number > 0, got {}", c.lr));
    }
    if !(c.weight_decay.is_finite() && c.weight_decay >= 0.0) {
        return Err(format!(
            "--weight-decay expects a number >= 0, got {}",
            c.weight_decay
        ));
    }
    if !(0.0..1.0).contains(&c.momentum) {
        return Err(format!(
            "--momentum expects a number in [0, 1), got {}",
            c.momentum
        ));
    }
    Ok(Some(a))
}

/// MNIST from `dir`: pixels scaled to [0, 1], then standardized as the digits.
fn load_mnist(dir: &std::path::Path) -> Result<Dataset, String> {
    let m = mnist::load_dir(dir).map_err(|e| format!("MNIST: {e}"))?;
    let scale = |img: &mnist::IdxImages| -> Vec<f32> {
        img.pixels.iter().map(|&p| f32::from(p) / 255.0).collect()
    };
    let labels = |l: &[u8]| -> Vec<u32> { l.iter().map(|&v| u32::from(v)).collect() };
    let ti = &m.train_images;
    Dataset::from_raw(
        format!("MNIST {}x{} ({})", ti.rows, ti.cols, dir.display()),
        ti.rows * ti.cols,
        10,
        scale(ti),
        labels(&m.train_labels),
        scale(&m.test_images),
        labels(&m.test_labels),
    )
}

/// The progress bar over all batches (on stderr; indicatif hides it when stderr is not a
/// terminal) and the per-epoch lines (on stdout).
struct Progress {
    bar: ProgressBar,
    epochs: usize,
}

impl Observer for Progress {
    fn start(&mut self, batches: u64) {
        self.bar = ProgressBar::new(batches).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} batches, eta {eta}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        self.bar.set_message(format!("epoch 1/{}", self.epochs));
    }

    fn batch(&mut self, _epoch: usize, _loss: f32) {
        self.bar.inc(1);
    }

    fn epoch(&mut self, s: &EpochStats) {
        self.bar.suspend(|| {
            println!(
                "{:>5}  {:>10.6}  {:>8.2}%  {:>8.2}%",
                s.epoch,
                s.loss,
                100.0 * s.train_acc,
                100.0 * s.test_acc
            )
        });
        if s.epoch < self.epochs {
            self.bar
                .set_message(format!("epoch {}/{}", s.epoch + 1, self.epochs));
        }
    }
}

fn print_summary(r: &Report, cfg: &Config, data: &Dataset, threads: usize) {
    let last = r.epochs.last().expect("at least one epoch");
    println!();
    println!(
        "final: train loss {:.6}, test accuracy {:.2}% ({}/{})",
        last.loss,
        100.0 * r.test_acc(),
        r.test_correct,
        r.test_len
    );
    println!();
    println!("confusion matrix (rows: true class, columns: predicted class)");
    let c = r.classes;
    print!("     ");
    for j in 0..c {
        print!("{j:>5}");
    }
    println!();
    for i in 0..c {
        print!("{i:>5}");
        for j in 0..c {
            print!("{:>5}", r.confusion[i * c + j]);
        }
        println!();
    }
    println!();
    let secs = r.train_time.as_secs_f64();
    println!(
        "kernels: {} tier, {threads} thread{}",
        r.isa,
        if threads == 1 { "" } else { "s" }
    );
    println!(
        "train steps: {} batches of up to {} ({} samples) in {:.1} ms: {:.1} us per batch, \
         {:.3e} samples/s",
        r.batches,
        cfg.batch.min(data.train_len()),
        r.samples,
        secs * 1e3,
        secs * 1e6 / r.batches as f64,
        r.samples_per_s()
    );
    println!(
        "GEMM work: {:.3e} flop ({}), {:.2} GFLOP/s",
        r.flops,
        if cfg.hidden > 0 {
            "2*B*D*C per forward, weight gradient and dA of the output layer, \
             forward and weight gradient of the hidden layer"
        } else {
            "2*B*D*C per forward and weight gradient"
        },
        r.gflops()
    );
    println!(
        "weights: {} parameters, sum {:.17e}, fnv1a64 {:016x}",
        r.params.len(),
        r.checksum(),
        r.fnv1a()
    );
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("train_digits: error: {e}\n(run with --help for the options)");
            return ExitCode::from(2);
        }
    };
    // An unavailable tier (or a bad SOFTMAX_KERNELS_ISA) is a command-line problem.
    if let Err(e) = train::kernels_for(args.cfg.isa) {
        eprintln!("train_digits: error: {e}");
        return ExitCode::from(2);
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("train_digits: error: cannot start {threads} threads: {e}");
            return ExitCode::FAILURE;
        }
    };
    let data = match &args.mnist {
        Some(dir) => load_mnist(dir),
        None => train::load_digits(args.cfg.seed),
    };
    let data = match data {
        Ok(d) => d,
        Err(e) => {
            eprintln!("train_digits: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = &args.cfg;
    println!(
        "data: {}, {} train / {} test samples, {} features, {} classes",
        data.name,
        data.train_len(),
        data.test_len(),
        data.features,
        data.classes
    );
    let model = if cfg.hidden > 0 {
        format!(
            "{} -> {} (ReLU) -> {} softmax",
            data.features, cfg.hidden, data.classes
        )
    } else {
        format!("softmax regression {} -> {}", data.features, data.classes)
    };
    println!(
        "model: {model}; SGD lr {} momentum {} weight decay {}, batch {}, {} epochs, seed {}",
        cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch, cfg.epochs, cfg.seed
    );
    println!();
    println!("epoch  train loss  train acc   test acc");
    let result = pool.install(|| {
        let mut obs = Progress {
            bar: ProgressBar::hidden(),
            epochs: cfg.epochs,
        };
        let r = train::train(cfg, &data, &mut obs);
        obs.bar.finish_and_clear();
        r
    });
    match result {
        Ok(report) => {
            print_summary(&report, cfg, &data, pool.current_num_threads());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("train_digits: error: {e}");
            ExitCode::FAILURE
        }
    }
}
