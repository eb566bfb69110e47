//! Argument errors of every function (free, `Kernels` method of every tier, `reference::*`):
//! the exact `Error` variant, a Display message that names the argument and the sizes, and no
//! output written. Zero rows is fine and writes nothing. Tier names parse case-insensitively;
//! `SOFTMAX_KERNELS_ISA` is checked in child processes (it is read once per process).

mod common;

use std::ffi::OsString;

use common::Guarded;
use softmax_kernels::{
    reference, Error, Isa, Kernels, MaskedRows, Result, SoftmaxOptions, ISA_ENV,
};

/// A forward function `(x, y, cols)` (softmax, log_softmax, with or without options).
type FwdFn<'a> = Box<dyn Fn(&[f32], &mut [f32], usize) -> Result<()> + 'a>;
/// An in-place forward function `(x, cols)`.
type InPlaceFn<'a> = Box<dyn Fn(&mut [f32], usize) -> Result<()> + 'a>;
/// A backward function `(y, dy, dx, cols)`.
type BwdFn<'a> = Box<dyn Fn(&[f32], &[f32], &mut [f32], usize) -> Result<()> + 'a>;

/// One implementation of the whole API: the free functions, one tier's methods, or the
/// reference module.
struct Api<'a> {
    name: String,
    fwd: Vec<(&'static str, FwdFn<'a>)>,
    inplace: Vec<(&'static str, InPlaceFn<'a>)>,
    lse: FwdFn<'a>,
    bwd: Vec<(&'static str, BwdFn<'a>)>,
}

fn zero() -> SoftmaxOptions {
    SoftmaxOptions::default().masked_rows(MaskedRows::Zero)
}

fn free_api() -> Api<'static> {
    use softmax_kernels as sk;
    Api {
        name: "free functions".into(),
        fwd: vec![
            ("softmax", Box::new(sk::softmax)),
            (
                "softmax_with",
                Box::new(|x, y, c| sk::softmax_with(x, y, c, zero())),
            ),
            ("log_softmax", Box::new(sk::log_softmax)),
            (
                "log_softmax_with",
                Box::new(|x, y, c| sk::log_softmax_with(x, y, c, zero())),
            ),
        ],
        inplace: vec![
            ("softmax_inplace", Box::new(sk::softmax_inplace)),
            (
                "softmax_inplace_with",
                Box::new(|x, c| sk::softmax_inplace_with(x, c, zero())),
            ),
            ("log_softmax_inplace", Box::new(sk::log_softmax_inplace)),
            (
                "log_softmax_inplace_with",
                Box::new(|x, c| sk::log_softmax_inplace_with(x, c, zero())),
            ),
        ],
        lse: Box::new(sk::logsumexp),
        bwd: vec![
            ("softmax_backward", Box::new(sk::softmax_backward)),
            ("log_softmax_backward", Box::new(sk::log_softmax_backward)),
        ],
    }
}

fn tier_api(k: &'static Kernels) -> Api<'static> {
    Api {
        name: format!("Kernels({})", k.isa()),
        fwd: vec![
            ("softmax", Box::new(move |x, y, c| k.softmax(x, y, c))),
            (
                "softmax_with",
                Box::new(move |x, y, c| k.softmax_with(x, y, c, zero())),
            ),
            (
                "log_softmax",
                Box::new(move |x, y, c| k.log_softmax(x, y, c)),
            ),
            (
                "log_softmax_with",
                Box::new(move |x, y, c| k.log_softmax_with(x, y, c, zero())),
            ),
        ],
        inplace: vec![
            (
                "softmax_inplace",
                Box::new(move |x, c| k.softmax_inplace(x, c)),
            ),
            (
                "softmax_inplace_with",
                Box::new(move |x, c| k.softmax_inplace_with(x, c, zero())),
            ),
            (
                "log_softmax_inplace",
                Box::new(move |x, c| k.log_softmax_inplace(x, c)),
            ),
            (
                "log_softmax_inplace_with",
                Box::new(move |x, c| k.log_softmax_inplace_with(x, c, zero())),
            ),
        ],
        lse: Box::new(move |x, o, c| k.logsumexp(x, o, c)),
        bwd: vec![
            (
                "softmax_backward",
                Box::new(move |y, d, x, c| k.softmax_backward(y, d, x, c)),
            ),
            (
                "log_softmax_backward",
                Box::new(move |y, d, x, c| k.log_softmax_backward(y, d, x, c)),
            ),
        ],
    }
}

fn reference_api() -> Api<'static> {
    Api {
        name: "reference".into(),
        fwd: vec![
            ("softmax", Box::new(reference::softmax)),
            (
                "softmax_with",
                Box::new(|x, y, c| reference::softmax_with(x, y, c, zero())),
            ),
            ("log_softmax", Box::new(reference::log_softmax)),
            (
                "log_softmax_with",
                Box::new(|x, y, c| reference::log_softmax_with(x, y, c, zero())),
            ),
        ],
        inplace: vec![],
        lse: Box::new(reference::logsumexp),
        bwd: vec![
            ("softmax_backward", Box::new(reference::softmax_backward)),
            (
                "log_softmax_backward",
                Box::new(reference::log_softmax_backward),
            ),
        ],
    }
}

/// Every implementation: the free functions (when `SOFTMAX_KERNELS_ISA` is valid here), every
/// tier, and the reference.
fn apis() -> Vec<Api<'static>> {
    let mut v = Vec::new();
    match Kernels::active() {
        Ok(_) => v.push(free_api()),
        Err(e) => eprintln!("not testing the free functions: {e}"),
    }
    v.extend(common::tiers().into_iter().map(tier_api));
    v.push(reference_api());
    v
}

const POISON: f32 = -7777.0;

/// Asserts `r` is exactly `want`, that its message contains every piece of `must`, and that
/// the guarded output still holds only `POISON` (nothing written).
fn expect_err(ctx: &str, r: Result<()>, want: &Error, must: &[String], out: &Guarded) {
    match r {
        Err(e) => {
            assert_eq!(&e, want, "{ctx}: wrong error");
            let msg = e.to_string();
            for m in must {
                assert!(
                    msg.contains(m.as_str()),
                    "{ctx}: message {msg:?} does not mention {m:?}"
                );
            }
        }
        Ok(()) => panic!("{ctx}: returned Ok, want {want:?}"),
    }
    out.assert_guards(ctx);
    assert!(
        out.slice().iter().all(|&v| v == POISON),
        "{ctx}: an output was written although the call failed"
    );
}

fn poisoned(n: usize) -> Guarded {
    Guarded::filled(n, POISON, 3)
}

fn msg_zero() -> Vec<String> {
    vec!["`cols`".into(), "0".into()]
}
fn msg_not_multiple(arg: &str, len: usize, cols: usize) -> Vec<String> {
    vec![
        format!("`{arg}`"),
        len.to_string(),
        format!("cols = {cols}"),
    ]
}
fn msg_mismatch(arg: &str, expected: usize, actual: usize) -> Vec<String> {
    vec![
        format!("`{arg}`"),
        format!("length {actual}"),
        format!("length {expected}"),
    ]
}

#[test]
fn zero_cols() {
    let want = Error::ZeroDim { arg: "cols" };
    for api in apis() {
        for (x_len, y_len) in [(6usize, 6usize), (0, 0), (5, 3)] {
            let ctx = |f: &str| format!("{} {f}(x {x_len}, y {y_len}, cols 0)", api.name);
            let x = vec![1.0f32; x_len];
            for (name, f) in &api.fwd {
                let mut y = poisoned(y_len);
                expect_err(&ctx(name), f(&x, y.slice_mut(), 0), &want, &msg_zero(), &y);
            }
            for (name, f) in &api.inplace {
                let mut x = poisoned(x_len);
                expect_err(&ctx(name), f(x.slice_mut(), 0), &want, &msg_zero(), &x);
            }
            let mut out = poisoned(y_len);
            expect_err(
                &ctx("logsumexp"),
                (api.lse)(&x, out.slice_mut(), 0),
                &want,
                &msg_zero(),
                &out,
            );
            for (name, f) in &api.bwd {
                let mut dx = poisoned(x_len);
                let r = f(&x, &x, dx.slice_mut(), 0);
                expect_err(&ctx(name), r, &want, &msg_zero(), &dx);
            }
        }
    }
}

#[test]
fn length_not_a_multiple_of_cols() {
    for api in apis() {
        for (len, cols) in [
            (5usize, 2usize),
            (7, 3),
            (1, 2),
            (100, 33),
            (69633, 65536),
            (5, usize::MAX),
        ] {
            let ctx = |f: &str| format!("{} {f}(len {len}, cols {cols})", api.name);
            let x = vec![0.5f32; len];
            let want = Error::NotMultiple {
                arg: "x",
                len,
                cols,
            };
            let must = msg_not_multiple("x", len, cols);
            for (name, f) in &api.fwd {
                let mut y = poisoned(len);
                expect_err(&ctx(name), f(&x, y.slice_mut(), cols), &want, &must, &y);
            }
            for (name, f) in &api.inplace {
                let mut x = poisoned(len);
                expect_err(&ctx(name), f(x.slice_mut(), cols), &want, &must, &x);
            }
            let mut out = poisoned(len / cols.max(1));
            let r = (api.lse)(&x, out.slice_mut(), cols);
            expect_err(&ctx("logsumexp"), r, &want, &must, &out);
            let want = Error::NotMultiple {
                arg: "y",
                len,
                cols,
            };
            let must = msg_not_multiple("y", len, cols);
            for (name, f) in &api.bwd {
                let mut dx = poisoned(len);
                expect_err(
                    &ctx(name),
                    f(&x, &x, dx.slice_mut(), cols),
                    &want,
                    &must,
                    &dx,
                );
            }
        }
    }
}

#[test]
fn output_length_mismatch() {
    for api in apis() {
        for (rows, cols, y_len) in [
            (3usize, 4usize, 11usize),
            (3, 4, 13),
            (2, 5, 0),
            (0, 5, 5),
            (1, 1, 2),
        ] {
            let n = rows * cols;
            let ctx = |f: &str| format!("{} {f}(x {n}, y {y_len}, cols {cols})", api.name);
            let x = vec![0.25f32; n];
            let want = Error::LengthMismatch {
                arg: "y",
                expected: n,
                actual: y_len,
            };
            let must = msg_mismatch("y", n, y_len);
            for (name, f) in &api.fwd {
                let mut y = poisoned(y_len);
                expect_err(&ctx(name), f(&x, y.slice_mut(), cols), &want, &must, &y);
            }
        }
    }
}

#[test]
fn logsumexp_out_length_mismatch() {
    for api in apis() {
        for (rows, cols, out_len) in [
            (3usize, 4usize, 2usize),
            (3, 4, 4),
            (3, 4, 12),
            (0, 7, 1),
            (1, 69633, 0),
        ] {
            let ctx = format!(
                "{} logsumexp(rows {rows}, cols {cols}, out {out_len})",
                api.name
            );
            let x = vec![0.0f32; rows * cols];
            let want = Error::LengthMismatch {
                arg: "out",
                expected: rows,
                actual: out_len,
            };
            let mut out = poisoned(out_len);
            let r = (api.lse)(&x, out.slice_mut(), cols);
            expect_err(&ctx, r, &want, &msg_mismatch("out", rows, out_len), &out);
        }
    }
}

#[test]
fn backward_length_mismatch() {
    for api in apis() {
        for (name, f) in &api.bwd {
            for (rows, cols) in [(2usize, 3usize), (1, 1000), (0, 4)] {
                let n = rows * cols;
                let y = vec![0.5f32; n];
                for bad in [n + 1, n + cols, n.saturating_sub(1)] {
                    if bad == n {
                        continue;
                    }
                    let ctx = format!("{} {name}(y {n}, cols {cols})", api.name);
                    // dy of the wrong length.
                    let dy = vec![0.5f32; bad];
                    let mut dx = poisoned(n);
                    let want = Error::LengthMismatch {
                        arg: "dy",
                        expected: n,
                        actual: bad,
                    };
                    let r = f(&y, &dy, dx.slice_mut(), cols);
                    expect_err(
                        &format!("{ctx} dy {bad}"),
                        r,
                        &want,
                        &msg_mismatch("dy", n, bad),
                        &dx,
                    );
                    // dx of the wrong length.
                    let dy = vec![0.5f32; n];
                    let mut dx = poisoned(bad);
                    let want = Error::LengthMismatch {
                        arg: "dx",
                        expected: n,
                        actual: bad,
                    };
                    let r = f(&y, &dy, dx.slice_mut(), cols);
                    expect_err(
                        &format!("{ctx} dx {bad}"),
                        r,
                        &want,
                        &msg_mismatch("dx", n, bad),
                        &dx,
                    );
                }
            }
        }
    }
}

/// Zero rows (empty slices, any positive `cols`, the online sizes and `usize::MAX` included) is
/// Ok and writes nothing: the guards around the empty output stay intact.
#[test]
fn zero_rows_is_ok_and_writes_nothing() {
    for api in apis() {
        for cols in [1usize, 3, 10, 64, 1000, 65536, 69633, usize::MAX] {
            let ctx = |f: &str| format!("{} {f}(empty, cols {cols})", api.name);
            let x = Guarded::filled(0, POISON, 1);
            for (name, f) in &api.fwd {
                let mut y = poisoned(0);
                assert_eq!(f(x.slice(), y.slice_mut(), cols), Ok(()), "{}", ctx(name));
                y.assert_guards(&ctx(name));
            }
            for (name, f) in &api.inplace {
                let mut y = poisoned(0);
                assert_eq!(f(y.slice_mut(), cols), Ok(()), "{}", ctx(name));
                y.assert_guards(&ctx(name));
            }
            let mut out = poisoned(0);
            assert_eq!(
                (api.lse)(x.slice(), out.slice_mut(), cols),
                Ok(()),
                "{}",
                ctx("lse")
            );
            out.assert_guards(&ctx("logsumexp"));
            for (name, f) in &api.bwd {
                let mut dx = poisoned(0);
                assert_eq!(
                    f(x.slice(), x.slice(), dx.slice_mut(), cols),
                    Ok(()),
                    "{}",
                    ctx(name)
                );
                dx.assert_guards(&ctx(name));
            }
            x.assert_guards(&ctx("input"));
        }
    }
}

#[test]
fn error_messages_in_full() {
    // The Display texts name the argument and every size involved.
    let e = Error::NotMultiple {
        arg: "x",
        len: 7,
        cols: 3,
    };
    assert_eq!(
        e.to_string(),
        "`x` has length 7, which is not a multiple of cols = 3"
    );
    let e = Error::LengthMismatch {
        arg: "out",
        expected: 3,
        actual: 2,
    };
    let s = e.to_string();
    assert!(
        s.contains("`out`") && s.contains('2') && s.contains('3'),
        "{s}"
    );
    let s = Error::ZeroDim { arg: "cols" }.to_string();
    assert!(s.contains("`cols`"), "{s}");
    // Errors are std errors.
    let _: &dyn std::error::Error = &e;
}

#[test]
fn isa_names_parse_case_insensitively() {
    for (s, want) in [
        ("AVX512", Isa::Avx512),
        ("avx512", Isa::Avx512),
        ("Avx512", Isa::Avx512),
        ("AVX2", Isa::Avx2),
        ("aVx2", Isa::Avx2),
        ("Portable", Isa::Portable),
        ("PORTABLE", Isa::Portable),
        ("scalar", Isa::Scalar),
        ("SCALAR", Isa::Scalar),
        ("  avx2\t", Isa::Avx2),
    ] {
        assert_eq!(s.parse::<Isa>(), Ok(want), "{s:?}");
    }
    for isa in Isa::ALL {
        assert_eq!(isa.name().parse::<Isa>(), Ok(isa));
        assert_eq!(isa.to_string(), isa.name());
    }
    for bad in [
        "",
        "avx-512",
        "avx512f",
        "neon",
        "sse2",
        "avx 2",
        "scalar,avx2",
        "fast",
    ] {
        // Parsing involves no environment variable, so its error names none.
        match bad.parse::<Isa>() {
            Err(e @ Error::InvalidOption { name: "isa", .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&format!("{bad:?}")), "{msg}");
                assert!(!msg.contains("SOFTMAX_KERNELS_ISA"), "{msg}");
                assert!(msg.contains("scalar, portable, avx2 or avx512"), "{msg}");
            }
            other => panic!("{bad:?} parsed as {other:?}"),
        }
    }
    // `try_for_isa` reports a missing tier with the tiers the CPU has.
    for isa in Isa::ALL {
        match Kernels::try_for_isa(isa) {
            Ok(k) => assert_eq!(k.isa(), isa),
            Err(e) => {
                assert_eq!(e, Error::IsaUnavailable { isa });
                assert!(!isa.is_available());
                let msg = e.to_string();
                for have in Isa::available() {
                    assert!(msg.contains(have.name()), "{msg}");
                }
            }
        }
    }
    // Every tier the CPU lists is obtainable; the others are not.
    for isa in Isa::ALL {
        assert_eq!(Kernels::for_isa(isa).is_some(), isa.is_available(), "{isa}");
        assert_eq!(Isa::available().contains(&isa), isa.is_available());
    }
    assert_eq!(Kernels::best().isa(), *Isa::available().last().unwrap());
    assert_eq!(Isa::best(), Kernels::best().isa());
}

// ---- SOFTMAX_KERNELS_ISA, in child processes ----------------------------------------------

/// Set in a child process: the name of the scenario it must run.
const CHILD: &str = "SOFTMAX_KERNELS_ERRORS_TEST_CHILD";

/// Re-runs this test binary for exactly `test`, with `ISA_ENV` set to `value` (or removed),
/// and checks that the child ran that test and passed.
fn run_child(test: &str, value: Option<OsString>) {
    let mut cmd = common::child::self_command();
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test);
    match &value {
        Some(v) => cmd.env(ISA_ENV, v),
        None => cmd.env_remove(ISA_ENV),
    };
    let out = cmd.output().expect("spawn the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child {test} with {ISA_ENV}={value:?} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("CHILD-OK {test}")),
        "child {test} did not run the scenario:\n{stdout}\n{stderr}"
    );
}

/// True in the child process of scenario `test` (which then runs its checks).
fn in_child(test: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|v| v == test)
}

fn child_ok(test: &str) {
    println!("CHILD-OK {test}");
}

/// Every free function returns `want` (and writes nothing).
fn free_functions_all_fail(want: &Error) {
    let api = free_api();
    let x = vec![0.5f32; 6];
    for (name, f) in &api.fwd {
        let mut y = poisoned(6);
        expect_err(name, f(&x, y.slice_mut(), 3), want, &[], &y);
    }
    for (name, f) in &api.inplace {
        let mut x = poisoned(6);
        expect_err(name, f(x.slice_mut(), 3), want, &[], &x);
    }
    let mut out = poisoned(2);
    expect_err(
        "logsumexp",
        (api.lse)(&x, out.slice_mut(), 3),
        want,
        &[],
        &out,
    );
    for (name, f) in &api.bwd {
        let mut dx = poisoned(6);
        expect_err(name, f(&x, &x, dx.slice_mut(), 3), want, &[], &dx);
    }
}

/// A value that is not a tier: every free function returns `BadIsaEnv` naming the value (it
/// never falls back to another tier), while `Kernels` tables still work.
#[test]
fn isa_env_bad_value_fails_free_functions() {
    const NAME: &str = "isa_env_bad_value_fails_free_functions";
    if in_child(NAME) {
        let want = Error::BadIsaEnv {
            value: "avx-9000".into(),
            reason: "not a tier name",
        };
        assert_eq!(Kernels::active().err(), Some(want.clone()));
        free_functions_all_fail(&want);
        let msg = want.to_string();
        assert!(
            msg.contains("\"avx-9000\"") && msg.contains(ISA_ENV),
            "{msg}"
        );
        // Explicit tables are unaffected.
        let mut p = [0.0f32; 2];
        Kernels::best().softmax(&[1.0, 1.0], &mut p, 2).unwrap();
        assert_eq!(p, [0.5, 0.5]);
        reference::softmax(&[1.0, 1.0], &mut p, 2).unwrap();
        assert_eq!(p, [0.5, 0.5]);
        child_ok(NAME);
        return;
    }
    run_child(NAME, Some("avx-9000".into()));
}

/// A value that is not valid UTF-8 is rejected too.
#[cfg(unix)]
#[test]
fn isa_env_non_utf8_fails_free_functions() {
    const NAME: &str = "isa_env_non_utf8_fails_free_functions";
    if in_child(NAME) {
        match Kernels::active() {
            Err(Error::BadIsaEnv { .. }) => {}
            other => panic!("non-UTF-8 {ISA_ENV}: {other:?}"),
        }
        let want = Kernels::active().unwrap_err();
        free_functions_all_fail(&want);
        child_ok(NAME);
        return;
    }
    use std::os::unix::ffi::OsStringExt;
    run_child(NAME, Some(OsString::from_vec(vec![b'a', b'v', b'x', 0xFF])));
}

/// A tier this CPU lacks is rejected (only testable where some tier is missing).
#[test]
fn isa_env_unavailable_tier_fails_free_functions() {
    const NAME: &str = "isa_env_unavailable_tier_fails_free_functions";
    let Some(missing) = Isa::ALL.into_iter().find(|i| !i.is_available()) else {
        common::note_unavailable_tiers();
        eprintln!("every tier is available on this CPU: nothing to test");
        return;
    };
    if in_child(NAME) {
        match Kernels::active() {
            Err(Error::BadIsaEnv { value, .. }) => assert_eq!(value, missing.name()),
            other => panic!("{ISA_ENV}={missing}: {other:?}"),
        }
        // The message lists the tiers this CPU runs, not the rejected one.
        let msg = Kernels::active().unwrap_err().to_string();
        let (_, runs) = msg.split_once("this CPU runs").expect(&msg);
        assert!(!runs.contains(missing.name()), "{msg}");
        for have in Isa::available() {
            assert!(runs.contains(have.name()), "{msg}");
        }
        free_functions_all_fail(&Kernels::active().unwrap_err());
        child_ok(NAME);
        return;
    }
    run_child(NAME, Some(missing.name().into()));
}

/// `SOFTMAX_KERNELS_ISA=scalar` forces the scalar tier: `Kernels::active()` is Scalar and the
/// free functions give the reference's bits.
#[test]
fn isa_env_scalar_forces_scalar() {
    const NAME: &str = "isa_env_scalar_forces_scalar";
    if in_child(NAME) {
        assert_eq!(Kernels::active().map(|k| k.isa()), Ok(Isa::Scalar));
        let mut rng = common::rng(11);
        let cols = 37;
        let x = common::logits(&mut rng, 5 * cols, 10.0);
        let (mut a, mut b) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
        softmax_kernels::softmax(&x, &mut a, cols).unwrap();
        reference::softmax(&x, &mut b, cols).unwrap();
        common::ok(
            "free softmax under scalar",
            common::oracle::check_bits("vs reference", &a, &b),
        );
        softmax_kernels::log_softmax(&x, &mut a, cols).unwrap();
        reference::log_softmax(&x, &mut b, cols).unwrap();
        common::ok(
            "free log_softmax under scalar",
            common::oracle::check_bits("vs reference", &a, &b),
        );
        child_ok(NAME);
        return;
    }
    run_child(NAME, Some("scalar".into()));
}

/// Upper case and spaces are accepted in the variable too; an empty value means "unset".
#[test]
fn isa_env_case_and_empty() {
    const NAME: &str = "isa_env_case_and_empty";
    if in_child(NAME) {
        let v = std::env::var(ISA_ENV).unwrap_or_default();
        let want = if v.trim().is_empty() {
            Kernels::best().isa()
        } else {
            v.parse::<Isa>().unwrap()
        };
        assert_eq!(
            Kernels::active().map(|k| k.isa()),
            Ok(want),
            "{ISA_ENV}={v:?}"
        );
        let mut p = [0.0f32; 2];
        softmax_kernels::softmax(&[3.0, 3.0], &mut p, 2).unwrap();
        assert_eq!(p, [0.5, 0.5]);
        child_ok(NAME);
        return;
    }
    run_child(NAME, Some(" Portable ".into()));
    run_child(
        NAME,
        Some("AVX2".into()).filter(|_| Isa::Avx2.is_available()),
    );
    run_child(NAME, Some("".into()));
    run_child(NAME, None);
}
