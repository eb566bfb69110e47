//! A scalar f64 natural logarithm for the grouped cross-entropy loss of short rows, inlined
//! where the loss is summed.
//!
//! Why not `f64::ln`: on a one-row call the `ln` is on the path from the label to the loss,
//! whose latency is the call's time. libm's `log` is a call through the PLT with a
//! `vzeroupper` before it and about 55 instructions (callgrind); this one is about 20, inline,
//! for the arguments it gets (products of row sums, at least 1), and defers to `f64::ln` for
//! anything else (commit 8fb4b18 has the measurement: a small gain on a one-row call).
//!
//! The method is the usual table one (as in glibc's and ARM's optimized-routines `log`, from
//! which only the idea is taken; the table and the polynomial here are our own): write
//! `p = 2^k m` with `m` in `[1, 2)`, take the table entry `j = round(128 (m - 1))`, whose
//! `c_j = 1 + j / 128` is within `1/256` of `m`, and
//!
//! `ln p = k ln 2 - ln(1/c_j)' + ln(1 + r)`, with `r = m (1/c_j)' - 1`, `|r| <= 2^-8`,
//!
//! where `(1/c_j)'` is `1/c_j` rounded to f64 and `ln(1/c_j)'` is its logarithm correctly
//! rounded (so the rounding of the reciprocal does not matter: the identity is exact for the
//! stored value). `r` is one FMA, with one rounding (`2^-53 |r|`). `ln(1 + r) = r - r^2/2 + ..
//! - r^6/6` leaves out at most `r^7 / 7 < 2^-58`. With the other roundings the absolute error
//! is below `2^-52` plus an ulp of the result (two roundings at its magnitude), far under the
//! f32 inputs' own (the sums are f32, correct to about `2^-22`); `ln_group_matches_libm` in
//! this module's tests checks it against libm. `p = 1` gives exactly 0.

/// `ln 2` split so that `k * LN2_HI` is exact for `|k| < 2^21`.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);

/// Entry `j`: `(1 / (1 + j/128)` rounded to f64, `-ln` of that value correctly rounded), as
/// bit patterns. Generated with Python's `decimal` at 60 digits; `table_is_what_it_claims`
/// below checks both columns against f64 arithmetic and libm.
const TABLE: [(u64, u64); 129] = [
    (0x3ff0000000000000, 0x0000000000000000),
    (0x3fefc07f01fc07f0, 0x3f7fe02a6b106799),
    (0x3fef81f81f81f820, 0x3f8fc0a8b0fc03c4),
    (0x3fef44659e4a4271, 0x3f97b91b07d5b126),
    (0x3fef07c1f07c1f08, 0x3f9f829b0e7832f8),
    (0x3feecc07b301ecc0, 0x3fa39e87b9febd68),
    (0x3fee9131abf0b767, 0x3fa77458f632dcff),
    (0x3fee573ac901e574, 0x3fab42dd711971b9),
    (0x3fee1e1e1e1e1e1e, 0x3faf0a30c01162a8),
    (0x3fede5d6e3f8868a, 0x3fb16536eea37ae3),
    (0x3fedae6076b981db, 0x3fb341d7961bd1d0),
    (0x3fed77b654b82c34, 0x3fb51b073f06183c),
    (0x3fed41d41d41d41d, 0x3fb6f0d28ae56b4e),
    (0x3fed0cb58f6ec074, 0x3fb8c345d6319b23),
    (0x3fecd85689039b0b, 0x3fba926d3a4ad562),
    (0x3feca4b3055ee191, 0x3fbc5e548f5bc743),
    (0x3fec71c71c71c71c, 0x3fbe27076e2af2ea),
    (0x3fec3f8f01c3f8f0, 0x3fbfec9131dbeabc),
    (0x3fec0e070381c0e0, 0x3fc0d77e7cd08e5b),
    (0x3febdd2b899406f7, 0x3fc1b72ad52f67a2),
    (0x3febacf914c1bad0, 0x3fc29552f81ff521),
    (0x3feb7d6c3dda338b, 0x3fc371fc201e8f75),
    (0x3feb4e81b4e81b4f, 0x3fc44d2b6ccb7d1c),
    (0x3feb2036406c80d9, 0x3fc526e5e3a1b438),
    (0x3feaf286bca1af28, 0x3fc5ff3070a793d6),
    (0x3feac5701ac5701b, 0x3fc6d60fe719d21b),
    (0x3fea98ef606a63be, 0x3fc7ab890210d907),
    (0x3fea6d01a6d01a6d, 0x3fc87fa06520c911),
    (0x3fea41a41a41a41a, 0x3fc9525a9cf456b6),
    (0x3fea16d3f97a4b02, 0x3fca23bc1fe2b561),
    (0x3fe9ec8e951033d9, 0x3fcaf3c94e80bff3),
    (0x3fe9c2d14ee4a102, 0x3fcbc286742d8cd4),
    (0x3fe999999999999a, 0x3fcc8ff7c79a9a20),
    (0x3fe970e4f80cb872, 0x3fcd5c216b4fbb94),
    (0x3fe948b0fcd6e9e0, 0x3fce27076e2af2e8),
    (0x3fe920fb49d0e229, 0x3fcef0adcbdc5935),
    (0x3fe8f9c18f9c18fa, 0x3fcfb9186d5e3e29),
    (0x3fe8d3018d3018d3, 0x3fd0402594b4d041),
    (0x3fe8acb90f6bf3aa, 0x3fd0a324e27390e2),
    (0x3fe886e5f0abb04a, 0x3fd1058bf9ae4ad4),
    (0x3fe8618618618618, 0x3fd1675cababa60f),
    (0x3fe83c977ab2bedd, 0x3fd1c898c16999fb),
    (0x3fe8181818181818, 0x3fd22941fbcf7966),
    (0x3fe7f405fd017f40, 0x3fd2895a13de86a4),
    (0x3fe7d05f417d05f4, 0x3fd2e8e2bae11d31),
    (0x3fe7ad2208e0ecc3, 0x3fd347dd9a987d56),
    (0x3fe78a4c8178a4c8, 0x3fd3a64c556945ea),
    (0x3fe767dce434a9b1, 0x3fd404308686a7e4),
    (0x3fe745d1745d1746, 0x3fd4618bc21c5ec2),
    (0x3fe724287f46debc, 0x3fd4be5f957778a1),
    (0x3fe702e05c0b8170, 0x3fd51aad872df82e),
    (0x3fe6e1f76b4337c7, 0x3fd5767717455a6c),
    (0x3fe6c16c16c16c17, 0x3fd5d1bdbf5809ca),
    (0x3fe6a13cd1537290, 0x3fd62c82f2b9c796),
    (0x3fe6816816816817, 0x3fd686c81e9b14ad),
    (0x3fe661ec6a5122f9, 0x3fd6e08eaa2ba1e4),
    (0x3fe642c8590b2164, 0x3fd739d7f6bbd007),
    (0x3fe623fa77016240, 0x3fd792a55fdd47a1),
    (0x3fe6058160581606, 0x3fd7eaf83b82afc2),
    (0x3fe5e75bb8d015e7, 0x3fd842d1da1e8b18),
    (0x3fe5c9882b931057, 0x3fd89a3386c1425b),
    (0x3fe5ac056b015ac0, 0x3fd8f11e873662c8),
    (0x3fe58ed2308158ed, 0x3fd947941c2116fb),
    (0x3fe571ed3c506b3a, 0x3fd99d958117e08a),
    (0x3fe5555555555555, 0x3fd9f323ecbf984d),
    (0x3fe5390948f40feb, 0x3fda484090e5bb09),
    (0x3fe51d07eae2f815, 0x3fda9cec9a9a084a),
    (0x3fe5015015015015, 0x3fdaf1293247786b),
    (0x3fe4e5e0a72f0539, 0x3fdb44f77bcc8f64),
    (0x3fe4cab88725af6e, 0x3fdb9858969310fd),
    (0x3fe4afd6a052bf5b, 0x3fdbeb4d9da71b7a),
    (0x3fe49539e3b2d067, 0x3fdc3dd7a7cdad4d),
    (0x3fe47ae147ae147b, 0x3fdc8ff7c79a9a21),
    (0x3fe460cbc7f5cf9a, 0x3fdce1af0b85f3ec),
    (0x3fe446f86562d9fb, 0x3fdd32fe7e00ebd5),
    (0x3fe42d6625d51f87, 0x3fdd83e7258a2f3e),
    (0x3fe4141414141414, 0x3fddd46a04c1c4a1),
    (0x3fe3fb013fb013fb, 0x3fde24881a7c6c26),
    (0x3fe3e22cbce4a902, 0x3fde744261d68789),
    (0x3fe3c995a47babe7, 0x3fdec399d2468cc1),
    (0x3fe3b13b13b13b14, 0x3fdf128f5faf06ec),
    (0x3fe3991c2c187f63, 0x3fdf6123fa7028ad),
    (0x3fe3813813813814, 0x3fdfaf588f78f31d),
    (0x3fe3698df3de0748, 0x3fdffd2e0857f497),
    (0x3fe3521cfb2b78c1, 0x3fe02552a5a5d0ff),
    (0x3fe33ae45b57bcb2, 0x3fe04bdf9da926d2),
    (0x3fe323e34a2b10bf, 0x3fe0723e5c1cdf41),
    (0x3fe30d190130d190, 0x3fe0986f4f573521),
    (0x3fe2f684bda12f68, 0x3fe0be72e4252a83),
    (0x3fe2e025c04b8097, 0x3fe0e44985d1cc8c),
    (0x3fe2c9fb4d812ca0, 0x3fe109f39e2d4c96),
    (0x3fe2b404ad012b40, 0x3fe12f719593efbd),
    (0x3fe29e4129e4129e, 0x3fe154c3d2f4d5ea),
    (0x3fe288b01288b013, 0x3fe179eabbd899a0),
    (0x3fe27350b8812735, 0x3fe19ee6b467c96f),
    (0x3fe25e22708092f1, 0x3fe1c3b81f713c25),
    (0x3fe2492492492492, 0x3fe1e85f5e7040d1),
    (0x3fe23456789abcdf, 0x3fe20cdcd192ab6e),
    (0x3fe21fb78121fb78, 0x3fe23130d7bebf43),
    (0x3fe20b470c67c0d9, 0x3fe2555bce98f7ca),
    (0x3fe1f7047dc11f70, 0x3fe2795e1289b11b),
    (0x3fe1e2ef3b3fb874, 0x3fe29d37fec2b08b),
    (0x3fe1cf06ada2811d, 0x3fe2c0e9ed448e8c),
    (0x3fe1bb4a4046ed29, 0x3fe2e47436e40268),
    (0x3fe1a7b9611a7b96, 0x3fe307d7334f10be),
    (0x3fe19453808ca29c, 0x3fe32b1339121d71),
    (0x3fe1811811811812, 0x3fe34e289d9ce1d2),
    (0x3fe16e0689427379, 0x3fe37117b54747b6),
    (0x3fe15b1e5f75270d, 0x3fe393e0d3562a1a),
    (0x3fe1485f0e0acd3b, 0x3fe3b68449fffc23),
    (0x3fe135c81135c811, 0x3fe3d9026a7156fb),
    (0x3fe12358e75d3033, 0x3fe3fb5b84d16f43),
    (0x3fe1111111111111, 0x3fe41d8fe84672af),
    (0x3fe0fef010fef011, 0x3fe43f9fe2f9ce67),
    (0x3fe0ecf56be69c90, 0x3fe4618bc21c5ec2),
    (0x3fe0db20a88f4696, 0x3fe48353d1ea88df),
    (0x3fe0c9714fbcda3b, 0x3fe4a4f85db03ebb),
    (0x3fe0b7e6ec259dc8, 0x3fe4c679afccee39),
    (0x3fe0a6810a6810a7, 0x3fe4e7d811b75bb0),
    (0x3fe0953f39010954, 0x3fe50913cc01686b),
    (0x3fe0842108421084, 0x3fe52a2d265bc5ab),
    (0x3fe073260a47f7c6, 0x3fe54b2467999498),
    (0x3fe0624dd2f1a9fc, 0x3fe56bf9d5b3f399),
    (0x3fe05197f7d73404, 0x3fe58cadb5cd7989),
    (0x3fe0410410410410, 0x3fe5ad404c359f2d),
    (0x3fe03091b51f5e1a, 0x3fe5cdb1dc6c1765),
    (0x3fe0204081020408, 0x3fe5ee02a9241676),
    (0x3fe0101010101010, 0x3fe60e32f44788d9),
    (0x3fe0000000000000, 0x3fe62e42fefa39ef),
];

/// `ln p` for the loss groups: products of row sums, each at least 1. Exact at `p = 1`;
/// within `2^-52` plus an ulp of the result for `p` in `[1, f64::MAX]`. Anything else (NaN,
/// `+inf`, below 1) is `f64::ln`'s.
#[inline(always)]
pub(crate) fn ln_group(p: f64) -> f64 {
    if !(1.0..=f64::MAX).contains(&p) {
        return p.ln();
    }
    let bits = p.to_bits();
    // `p >= 1` is normal, so its exponent field is `k + 1023` with `k >= 0`.
    let k = ((bits >> 52) as i64 - 1023) as f64;
    let frac = bits & ((1u64 << 52) - 1);
    // `round(128 (m - 1))`: the top 7 fraction bits, rounded by the eighth; 0 ..= 128.
    let j = ((frac + (1u64 << 44)) >> 45) as usize;
    let m = f64::from_bits(frac | 0x3ff0_0000_0000_0000);
    let (invc, logc) = TABLE[j];
    let (invc, logc) = (f64::from_bits(invc), f64::from_bits(logc));
    let r = m.mul_add(invc, -1.0);
    // The tail -r^2/2 + r^3/3 - r^4/4 + r^5/5 - r^6/6 as
    // r^2 (-1/2 + r/3) + r^4 (-1/4 + r/5 - r^2/6): the two halves in parallel (a shorter
    // chain after `r` than Horner's, 4 operations deep instead of 7).
    let r2 = r * r;
    let a = r2 * r.mul_add(1.0 / 3.0, -0.5);
    let b = r2.mul_add(-1.0 / 6.0, r.mul_add(0.2, -0.25));
    let tail = (r2 * r2).mul_add(b, a);
    // `k ln 2 + ln c_j` (exact `k * LN2_HI`, one rounding), then the small terms.
    let hi = k.mul_add(LN2_HI, logc);
    (hi + r) + k.mul_add(LN2_LO, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_what_it_claims() {
        for (j, &(invc, logc)) in TABLE.iter().enumerate() {
            let (invc, logc) = (f64::from_bits(invc), f64::from_bits(logc));
            assert_eq!(invc, 1.0 / (1.0 + j as f64 / 128.0), "entry {j}");
            // libm's `ln` is within an ulp; the table's is correctly rounded.
            let libm = -invc.ln();
            assert!(
                (logc - libm).abs() <= f64::EPSILON * libm.abs(),
                "entry {j}: {logc:e} against {libm:e}"
            );
        }
    }

    /// The error against libm's `ln` (itself within an ulp) over [1, 2^1000], by a fixed
    /// pseudo-random sweep, every table boundary and the powers of two.
    #[test]
    fn ln_group_matches_libm() {
        let mut worst = 0.0f64;
        let mut check = |p: f64| {
            let (got, want) = (ln_group(p), p.ln());
            // 2^-52 absolute plus an ulp of the result on either side (libm's and ours).
            let tol = f64::EPSILON + 2.0 * f64::EPSILON * want.abs();
            assert!(
                (got - want).abs() <= tol,
                "ln_group({p:e}) = {got:e}, libm {want:e}"
            );
            worst = worst.max((got - want).abs() / tol);
        };
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..1_000_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // A random fraction and an exponent in [0, 1000).
            let e = (state >> 54) % 1000;
            check(f64::from_bits(
                ((1023 + e) << 52) | (state & ((1 << 52) - 1)),
            ));
        }
        for j in 0..=256u64 {
            for d in [-2i64, -1, 0, 1, 2] {
                let frac = ((j << 44) as i64 + d).clamp(0, (1 << 52) - 1) as u64;
                for e in [0u64, 1, 7, 60, 959] {
                    check(f64::from_bits(((1023 + e) << 52) | frac));
                }
            }
        }
        for e in 0..1024 {
            check(2f64.powi(e));
        }
        check(f64::MAX);
        println!("ln_group: worst error {worst:.3} of the tolerance");
    }

    #[test]
    fn ln_group_special_arguments() {
        assert_eq!(ln_group(1.0).to_bits(), 0.0f64.to_bits());
        assert!(ln_group(f64::NAN).is_nan());
        assert_eq!(ln_group(f64::INFINITY), f64::INFINITY);
        assert_eq!(ln_group(0.5), 0.5f64.ln());
        assert_eq!(ln_group(0.0), f64::NEG_INFINITY);
        assert!(ln_group(-1.0).is_nan());
    }
}
