//! The byte format every target decodes, and its inverse (for the seed corpus).
//!
//! An input is a fixed-size header (a `#[derive(Arbitrary)]` struct of integers, decoded with
//! `arbitrary`: every integer little-endian from the front, missing bytes read as 0) followed
//! by data words: the rest of the input, 4 bytes each (little-endian, the last one zero-padded).
//! Every float a target needs is a word turned into an `f32` by its bit pattern
//! (`f32::from_bits`), so NaN payloads, infinities, subnormals, `-0.0` and `f32::MAX` all occur;
//! a per-buffer [`Win`] can fold the exponents of normal numbers into a window around 1 (zero,
//! subnormals, infinities and NaN keep their bits), so that most inputs are also inside the
//! range where the numeric tolerances apply. When a buffer needs more words than the input
//! holds (long rows), [`Fill`] generates the rest. In the sparse fill mode (`Fill::mode % 8 ==
//! 4`) a buffer is instead one constant word with a few words overridden at positions the input
//! chooses: a long row of mostly one value with its maximum, ties of it or a NaN at far indices.

use arbitrary::{Arbitrary, Unstructured};

/// Serializes a header field exactly as `arbitrary` decodes it.
pub trait Enc {
    /// Appends the little-endian bytes.
    fn enc(&self, out: &mut Vec<u8>);
}

macro_rules! enc_int {
    ($($t:ty),*) => {$(
        impl Enc for $t {
            fn enc(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
enc_int!(u8, u16, u32, u64, i8, i16, i32, i64);

/// Declares a header struct (integers and nested headers only) with `Arbitrary` and [`Enc`].
#[macro_export]
macro_rules! header {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(arbitrary::Arbitrary, Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name { $($(#[$fm])* pub $f: $t,)* }
        impl $crate::input::Enc for $name {
            fn enc(&self, out: &mut Vec<u8>) {
                $($crate::input::Enc::enc(&self.$f, out);)*
            }
        }
    };
}

header! {
    /// An exponent window for one buffer's floats.
    pub struct Win {
        /// The window's centre exponent, as a signed offset from 2^0.
        pub center: i8,
        /// Half-width in binades; 128 and above: raw bits, no folding.
        pub spread: u8,
    }
}

impl Win {
    /// The raw-bits window (no folding).
    pub const RAW: Win = Win {
        center: 0,
        spread: 255,
    };

    /// Folds the exponent of a normal number into the window; other classes keep their bits.
    pub fn apply(self, w: u32) -> f32 {
        if self.spread >= 128 {
            return f32::from_bits(w);
        }
        let e = (w >> 23) & 0xFF;
        if e == 0 || e == 0xFF {
            return f32::from_bits(w);
        }
        let width = 2 * self.spread as u32 + 1;
        let e2 = (127 + self.center as i32 + ((e - 1) % width) as i32 - self.spread as i32)
            .clamp(1, 254) as u32;
        f32::from_bits((w & 0x807F_FFFF) | (e2 << 23))
    }

    /// Whether every finite nonzero value this window produces lies in `[2^-lim, 2^lim]`.
    pub fn within(self, lim: i32) -> bool {
        self.spread < 128 && {
            let lo = self.center as i32 - self.spread as i32;
            let hi = self.center as i32 + self.spread as i32 + 1;
            lo >= -lim && hi <= lim
        }
    }
}

header! {
    /// How words past the end of the input are made.
    pub struct Fill {
        /// `% 4`: 0: cycle the input's words; 1: `konst`; 2: pseudo-random words from `seed`;
        /// 3: pseudo-random, with `konst` every `period + 1` words. Except `% 8 == 4`, sparse:
        /// every word of a buffer of `n` words is `konst` but for up to
        /// `min(n, 1 + period % 16)` overrides, each a pair of input words (position `% n`,
        /// value), in order (a later pair at the same position wins); no input words are read
        /// for an empty buffer, and once the input's words run out the rest stays `konst`.
        pub mode: u8,
        /// The constant word.
        pub konst: u32,
        /// The generator's seed.
        pub seed: u32,
        /// See `mode` 3 and the sparse mode.
        pub period: u16,
        /// Bit 0: a buffer's input words go at its end rather than its start (a NaN in the
        /// last lane of a long row).
        pub place: u8,
    }
}

/// The data words of an input and the generator for the words past them.
pub struct Words {
    words: Vec<u32>,
    pos: usize,
    fill: Fill,
    state: u64,
    made: u64,
}

impl Words {
    /// The words of `rest` (4 bytes each, little-endian; the last one zero-padded).
    pub fn new(rest: &[u8], fill: Fill) -> Words {
        let words = rest
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(b)
            })
            .collect();
        Words {
            words,
            pos: 0,
            fill,
            state: fill.seed as u64 ^ 0x9E37_79B9_7F4A_7C15,
            made: 0,
        }
    }

    fn generated(&mut self) -> u32 {
        let i = self.made;
        self.made += 1;
        let rand = |st: &mut u64| {
            *st = st.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *st;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u32
        };
        match self.fill.mode % 4 {
            0 if !self.words.is_empty() => self.words[(i % self.words.len() as u64) as usize],
            0 | 1 => self.fill.konst,
            2 => rand(&mut self.state),
            _ => {
                let p = self.fill.period as u64 + 1;
                if i % p == self.fill.seed as u64 % p {
                    self.fill.konst
                } else {
                    rand(&mut self.state)
                }
            }
        }
    }

    /// `n` raw words: the input's next words (at the start, or at the end if `Fill::place`
    /// says so), the rest generated.
    pub fn raw(&mut self, n: usize) -> Vec<u32> {
        if self.fill.mode % 8 == 4 {
            return self.sparse(n);
        }
        let have = (self.words.len() - self.pos).min(n);
        let explicit = self.words[self.pos..self.pos + have].to_vec();
        self.pos += have;
        let mut out = Vec::with_capacity(n);
        if self.fill.place & 1 == 0 {
            out.extend_from_slice(&explicit);
            while out.len() < n {
                let w = self.generated();
                out.push(w);
            }
        } else {
            while out.len() < n - have {
                let w = self.generated();
                out.push(w);
            }
            out.extend_from_slice(&explicit);
        }
        out
    }

    /// The input's next `n` words as they are, whatever the fill mode (0 past the end).
    pub fn take(&mut self, n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| {
                let w = self.words.get(self.pos).copied().unwrap_or(0);
                self.pos = (self.pos + 1).min(self.words.len());
                w
            })
            .collect()
    }

    /// The sparse mode's `n` words (see [`Fill::mode`]).
    fn sparse(&mut self, n: usize) -> Vec<u32> {
        let mut out = vec![self.fill.konst; n];
        let k = n.min(1 + self.fill.period as usize % 16);
        for _ in 0..k {
            if self.words.len() - self.pos < 2 {
                break;
            }
            let (p, v) = (self.words[self.pos], self.words[self.pos + 1]);
            self.pos += 2;
            out[p as usize % n] = v;
        }
        out
    }

    /// `n` floats through the window `win`, in a vector of exactly `n` (capacity included, so
    /// that AddressSanitizer sees any access past it).
    pub fn floats(&mut self, n: usize, win: Win) -> Vec<f32> {
        let mut v: Vec<f32> = self.raw(n).into_iter().map(|w| win.apply(w)).collect();
        v.shrink_to_fit();
        v
    }

    /// One float through `win`.
    pub fn float(&mut self, win: Win) -> f32 {
        win.apply(self.raw(1)[0])
    }
}

/// Splits an input into its header and data words.
pub fn split<'a, H: Arbitrary<'a>>(data: &'a [u8]) -> (H, &'a [u8]) {
    let mut u = Unstructured::new(data);
    // Integer headers never fail to decode: missing bytes read as 0.
    let h = H::arbitrary(&mut u).unwrap_or_else(|_| unreachable!("integer header"));
    (h, u.take_rest())
}

/// Serializes a header and data floats (by bits) into the byte format.
pub fn encode<H: Enc>(h: &H, data: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    h.enc(&mut out);
    for v in data {
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    out
}

/// Serializes a header and raw data words.
pub fn encode_words<H: Enc>(h: &H, words: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    h.enc(&mut out);
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// A vector with capacity equal to its length (exact heap extent for AddressSanitizer).
pub fn exact<T: Clone>(v: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    out.extend_from_slice(v);
    out
}

/// The length a slice gets: `n`, or (when `sel` says so) `n` perturbed by `delta`, for the
/// argument checks. `sel % 8`: 0..=5 exact, 6 `n + delta`, 7 `delta` itself (a small absolute
/// length).
pub fn perturb(n: usize, sel: u8, delta: i8) -> usize {
    match sel % 8 {
        6 => (n as i64 + delta as i64).max(0) as usize,
        7 => (delta as i64).unsigned_abs() as usize,
        _ => n,
    }
}
