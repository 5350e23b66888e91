//! Dequantization against gguf-py: `tests/fixtures/gguf/dequant_goldens.bin`, made by
//! `scripts/make_gguf_goldens.py` (layout documented there).
//!
//! Comparison is bit-exact: the decoders perform the same f32 operations in the same
//! order as ggml / gguf-py (no fused multiply-add), so there is no tolerance. The one
//! exception is NaN: where the result is a NaN, only NaN-ness is compared, because the
//! bits of a NaN produced by `inf * 0` differ between CPU architectures (x86 yields a
//! negative quiet NaN, aarch64 a positive one) and the goldens were made on one.

use ember_converter::gguf::dequant::{dequantize, dequantize_into};
use ember_converter::gguf::types::{GgmlType, ALL_TYPES};
use ember_converter::ConvertError;

const GOLDENS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/gguf/dequant_goldens.bin"
);

struct Case {
    ty: GgmlType,
    raw: Vec<u8>,
    values: Vec<f32>,
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = b.split_at(n);
    *b = tail;
    head
}

fn u32_le(b: &mut &[u8]) -> u32 {
    u32::from_le_bytes(take(b, 4).try_into().unwrap())
}

fn load_goldens() -> Vec<Case> {
    let bytes = std::fs::read(GOLDENS).expect("dequant goldens fixture");
    let mut b = bytes.as_slice();
    assert_eq!(take(&mut b, 8), b"EMBDQG01");
    let count = u32_le(&mut b);
    let mut cases = Vec::new();
    for _ in 0..count {
        let ty = GgmlType::from_id(u32_le(&mut b)).unwrap();
        let n = u32_le(&mut b) as usize;
        let raw_len = u32_le(&mut b) as usize;
        let raw = take(&mut b, raw_len).to_vec();
        let values = take(&mut b, 4 * n)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        cases.push(Case { ty, raw, values });
    }
    assert!(b.is_empty(), "trailing bytes in goldens");
    cases
}

#[test]
fn dequantization_matches_gguf_py_bit_exactly() {
    let cases = load_goldens();
    let covered: Vec<GgmlType> = cases.iter().map(|c| c.ty).collect();
    for ty in ALL_TYPES.iter().filter(|t| t.can_dequantize()) {
        assert!(
            covered.contains(ty),
            "no golden for decodable type {}",
            ty.name()
        );
    }
    for c in &cases {
        let got = dequantize(c.ty, &c.raw, c.values.len()).unwrap();
        assert_eq!(got.len(), c.values.len());
        for (i, (g, w)) in got.iter().zip(&c.values).enumerate() {
            let same = if w.is_nan() {
                g.is_nan()
            } else {
                g.to_bits() == w.to_bits()
            };
            assert!(
                same,
                "{} element {i} (block {}): got {g:e} ({:#010x}), want {w:e} ({:#010x})",
                c.ty.name(),
                i / c.ty.block_size(),
                g.to_bits(),
                w.to_bits()
            );
        }
    }
}

#[test]
fn block_sizes_match_ggml() {
    // (type, elements per block, bytes per block) from ggml's type traits.
    let table = [
        (GgmlType::F32, 1, 4),
        (GgmlType::F16, 1, 2),
        (GgmlType::BF16, 1, 2),
        (GgmlType::Q4_0, 32, 18),
        (GgmlType::Q4_1, 32, 20),
        (GgmlType::Q5_0, 32, 22),
        (GgmlType::Q5_1, 32, 24),
        (GgmlType::Q8_0, 32, 34),
        (GgmlType::Iq4Nl, 32, 18),
        (GgmlType::Q2K, 256, 84),
        (GgmlType::Q3K, 256, 110),
        (GgmlType::Q4K, 256, 144),
        (GgmlType::Q5K, 256, 176),
        (GgmlType::Q6K, 256, 210),
        (GgmlType::Q8K, 256, 292),
    ];
    for (ty, bs, bb) in table {
        assert_eq!(
            (ty.block_size(), ty.block_bytes()),
            (bs, bb),
            "{}",
            ty.name()
        );
    }
}

#[test]
fn bad_lengths_are_errors() {
    for ty in ALL_TYPES.iter().copied().filter(|t| t.can_dequantize()) {
        let bs = ty.block_size();
        let bb = ty.block_bytes();
        // Zero elements is fine.
        assert!(dequantize(ty, &[], 0).unwrap().is_empty());
        if bs > 1 {
            let e = dequantize(ty, &vec![0; bb], bs - 1).unwrap_err();
            assert!(
                matches!(&e, ConvertError::Gguf(m) if m.contains("block size")),
                "{e}"
            );
        }
        let e = dequantize(ty, &vec![0; bb + 1], bs).unwrap_err();
        assert!(matches!(e, ConvertError::Gguf(_)), "{e}");
        let e = dequantize(ty, &vec![0; bb.saturating_sub(1)], bs).unwrap_err();
        assert!(matches!(e, ConvertError::Gguf(_)), "{e}");
        let mut out = vec![0.0; 2 * bs];
        assert!(dequantize_into(ty, &vec![0; bb], &mut out).is_err());
    }
}

#[test]
fn undecodable_types_are_unsupported() {
    for ty in ALL_TYPES.iter().copied().filter(|t| !t.can_dequantize()) {
        let e = dequantize(ty, &vec![0; ty.block_bytes()], ty.block_size()).unwrap_err();
        assert!(
            matches!(&e, ConvertError::Unsupported(m) if m.contains(ty.name())),
            "{e}"
        );
    }
}

#[test]
fn type_ids() {
    for ty in ALL_TYPES {
        assert_eq!(GgmlType::from_id(ty.id()).unwrap(), ty);
    }
    assert!(matches!(
        GgmlType::from_id(4),
        Err(ConvertError::Unsupported(_))
    ));
    assert!(matches!(GgmlType::from_id(1000), Err(ConvertError::Gguf(m)) if m.contains("1000")));
}
