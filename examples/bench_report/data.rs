//! Cache-line-aligned float buffers and deterministic test data.

/// A float buffer whose first element is 64-byte aligned (a `Vec` with the alignment slack).
pub struct AlignedBuf {
    v: Vec<f32>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    /// `len` zeros.
    pub fn zeros(len: usize) -> AlignedBuf {
        let v = vec![0.0f32; len + 16];
        // An f32 pointer is 4-aligned, so 64-byte alignment is at most 15 floats away.
        let off = v.as_ptr().align_offset(64).min(15);
        AlignedBuf { v, off, len }
    }

    /// `len` floats uniform in `[lo, hi)` from `seed`.
    pub fn uniform(len: usize, lo: f32, hi: f32, seed: u64) -> AlignedBuf {
        let mut b = AlignedBuf::zeros(len);
        fill_uniform(&mut b, lo, hi, seed);
        b
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.v[self.off..self.off + self.len]
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.v[self.off..self.off + self.len]
    }
}

/// SplitMix64.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `x` with floats uniform in `[lo, hi)` from `seed`.
pub fn fill_uniform(x: &mut [f32], lo: f32, hi: f32, seed: u64) {
    let mut st = seed;
    let scale = (hi - lo) / (1u32 << 24) as f32;
    for v in x {
        *v = lo + (splitmix(&mut st) >> 40) as f32 * scale;
    }
}

/// `n` class labels uniform in `0..classes`.
pub fn labels(n: usize, classes: usize, seed: u64) -> Vec<i64> {
    let mut st = seed;
    (0..n)
        .map(|_| (splitmix(&mut st) % classes as u64) as i64)
        .collect()
}
