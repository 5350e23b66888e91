//! The float type of the training forward/backward pass: `f32` for training,
//! `f64` for the finite-difference gradient check (tests), so that the same code
//! is checked that trains.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// Arithmetic the training pass needs. Implemented for `f32` and `f64` only.
pub trait Float:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f32(v: f32) -> Self;
    fn from_f64(v: f64) -> Self;
    fn from_usize(v: usize) -> Self;
    fn to_f64(self) -> f64;
    fn to_f32(self) -> f32;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn tanh(self) -> Self;
    /// The error function (libm's, in f64).
    fn erf(self) -> Self;
    fn max(self, o: Self) -> Self;
    /// `sum a[i] * b[i]` (see [`dot`]).
    fn dot(a: &[Self], b: &[Self]) -> Self;
    /// `y += alpha * x` (see [`axpy`]).
    fn axpy(y: &mut [Self], alpha: Self, x: &[Self]);
    /// `out[r] = dot(w[r, :], x)` for `w: [out.len(), x.len()]`.
    fn matvec(w: &[Self], x: &[Self], out: &mut [Self]);
}

macro_rules! impl_float {
    ($t:ty, $dot:expr, $axpy:expr, $matvec:expr) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline]
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            #[inline]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn from_usize(v: usize) -> Self {
                v as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn to_f32(self) -> f32 {
                self as f32
            }
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            #[inline]
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn erf(self) -> Self {
                libm::erf(self as f64) as $t
            }
            #[inline]
            fn max(self, o: Self) -> Self {
                <$t>::max(self, o)
            }
            #[inline]
            fn dot(a: &[Self], b: &[Self]) -> Self {
                $dot(a, b)
            }
            #[inline]
            fn axpy(y: &mut [Self], alpha: Self, x: &[Self]) {
                $axpy(y, alpha, x)
            }
            #[inline]
            fn matvec(w: &[Self], x: &[Self], out: &mut [Self]) {
                $matvec(w, x, out)
            }
        }
    };
}

/// The f32 dot/axpy kernels of the best tier this CPU has (chosen once; the
/// same table the inference pass uses, capped by `EMBER_KERNEL_TIER`).
fn f32_kernels() -> &'static ember_kernels::arch::Kernels {
    static K: std::sync::OnceLock<ember_kernels::arch::Kernels> = std::sync::OnceLock::new();
    K.get_or_init(ember_kernels::arch::kernels)
}

fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    (f32_kernels().dot_f32)(a, b)
}

fn axpy_f32(y: &mut [f32], alpha: f32, x: &[f32]) {
    (f32_kernels().axpy_f32)(y, alpha, x)
}

fn matvec_f32(w: &[f32], x: &[f32], out: &mut [f32]) {
    (f32_kernels().matvec_f32_f32)(w, x, out)
}

fn matvec_generic<F: Float>(w: &[F], x: &[F], out: &mut [F]) {
    for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len().max(1))) {
        *o = dot_generic(row, x);
    }
}

impl_float!(f32, dot_f32, axpy_f32, matvec_f32);
impl_float!(
    f64,
    dot_generic::<f64>,
    axpy_generic::<f64>,
    matvec_generic::<f64>
);

/// `sum a[i] * b[i]` over `min(a.len(), b.len())` elements: for f32 the SIMD
/// kernel of the CPU's tier, for f64 [`dot_generic`]. Deterministic for given
/// inputs on a given kernel tier (no dependence on threads).
#[inline]
pub fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    let n = a.len().min(b.len());
    F::dot(&a[..n], &b[..n])
}

/// `y += alpha * x` (f32: the tier's kernel).
#[inline]
pub fn axpy<F: Float>(y: &mut [F], alpha: F, x: &[F]) {
    F::axpy(y, alpha, x)
}

/// `sum a[i] * b[i]` with eight independent accumulators (so the compiler can
/// vectorise it without reassociating), combined in a fixed order: the result
/// depends only on the inputs.
#[inline]
pub fn dot_generic<F: Float>(a: &[F], b: &[F]) -> F {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [F::ZERO; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        // Fixed-size arrays: no bounds checks, so the loop vectorises.
        let (x, y): (&[F; 8], &[F; 8]) = (x.try_into().unwrap(), y.try_into().unwrap());
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = F::ZERO;
    for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y += alpha * x`.
#[inline]
pub fn axpy_generic<F: Float>(y: &mut [F], alpha: F, x: &[F]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}
