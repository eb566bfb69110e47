//! The digits classifier of `train_digits` (softmax regression on the embedded UCI digits,
//! the same split, standardization and hyper-parameters: 20 epochs, batch 32, SGD with lr
//! 0.03, momentum 0.9, weight decay 3e-3) trained in candle, once with the crate's
//! cross-entropy op and once with `candle_nn::loss::cross_entropy`, so the two can be compared:
//!
//! ```text
//! cargo run --release --features candle-nn --example candle_digits
//! ```
//!
//! The swap is one line: `softmax_kernels::candle::cross_entropy(&logits, &y, &opts)` where
//! candle-nn has `candle_nn::loss::cross_entropy(&logits, &y)`.

#[allow(dead_code)]
#[path = "../train_digits/train.rs"]
mod train;

use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use softmax_kernels::CrossEntropyOptions;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Loss {
    Ours,
    CandleNn,
}

/// Trains softmax regression with `loss`; returns (final train loss, test accuracy, seconds
/// spent in the loss and its backward pass).
fn fit(data: &train::Dataset, loss: Loss) -> candle_core::Result<(f32, f64, f64)> {
    let cfg = train::Config::default();
    let dev = Device::Cpu;
    let (d, c) = (data.features, data.classes);
    let w = Var::zeros((d, c), DType::F32, &dev)?;
    let b = Var::zeros(c, DType::F32, &dev)?;
    let mut vel = [
        Tensor::zeros((d, c), DType::F32, &dev)?,
        Tensor::zeros(c, DType::F32, &dev)?,
    ];
    let n = data.train_len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = train::SplitMix64::new(train::stream_seed(cfg.seed, train::Stream::Shuffle));
    let opts = CrossEntropyOptions::default();
    let (mut last_loss, mut loss_secs) = (0.0f32, 0.0f64);
    for _ in 0..cfg.epochs {
        rng.shuffle(&mut order);
        let (mut sum, mut seen) = (0.0f64, 0usize);
        for idx in order.chunks(cfg.batch) {
            let xs: Vec<f32> = idx
                .iter()
                .flat_map(|&i| data.train_x[i * d..(i + 1) * d].iter().copied())
                .collect();
            let ys: Vec<u32> = idx.iter().map(|&i| data.train_y[i]).collect();
            let x = Tensor::from_vec(xs, (idx.len(), d), &dev)?;
            let y = Tensor::new(ys.as_slice(), &dev)?;
            let logits = x.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
            let t0 = Instant::now();
            let l = match loss {
                Loss::Ours => softmax_kernels::candle::cross_entropy(&logits, &y, &opts)?,
                Loss::CandleNn => candle_nn::loss::cross_entropy(&logits, &y)?,
            };
            let grads = l.backward()?;
            loss_secs += t0.elapsed().as_secs_f64();
            sum += l.to_scalar::<f32>()? as f64 * idx.len() as f64;
            seen += idx.len();
            // SGD with momentum and weight decay, as PyTorch (and train_digits) define it.
            for (p, v) in [&w, &b].into_iter().zip(vel.iter_mut()) {
                let g = grads.get(p).expect("a gradient for every parameter");
                let g = (g + (p.as_tensor() * cfg.weight_decay as f64)?)?;
                *v = ((&*v * cfg.momentum as f64)? + g)?;
                p.set(&(p.as_tensor() - (&*v * cfg.lr as f64)?)?)?;
            }
        }
        last_loss = (sum / seen as f64) as f32;
    }
    let m = data.test_len();
    let xt = Tensor::from_vec(data.test_x.clone(), (m, d), &dev)?;
    let pred = xt
        .matmul(w.as_tensor())?
        .broadcast_add(b.as_tensor())?
        .argmax(D::Minus1)?
        .to_vec1::<u32>()?;
    let right = pred
        .iter()
        .zip(&data.test_y)
        .filter(|(p, y)| p == y)
        .count();
    Ok((last_loss, right as f64 / m as f64, loss_secs))
}

fn main() -> ExitCode {
    let data = match train::load_digits(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("candle_digits: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{}: {} train / {} test samples, {} features, {} classes",
        data.name,
        data.train_len(),
        data.test_len(),
        data.features,
        data.classes
    );
    for loss in [Loss::Ours, Loss::CandleNn] {
        match fit(&data, loss) {
            Ok((l, acc, secs)) => println!(
                "{:<28} final train loss {l:.6}, test accuracy {:.2}%, loss+backward {:.1} ms",
                match loss {
                    Loss::Ours => "softmax_kernels::candle",
                    Loss::CandleNn => "candle_nn::loss",
                },
                100.0 * acc,
                1e3 * secs
            ),
            Err(e) => {
                eprintln!("candle_digits: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
