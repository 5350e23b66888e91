//! Bad `.ember` files: every kind of damage gives a typed error naming the
//! problem, never a panic.

mod common;

use bytemuck::Zeroable;
use ember_runtime::format::{
    header_checksum, tensor_flags, DType, DirEntry, Header, CHECKSUM_FIELD_OFFSET, DIR_ENTRY_SIZE,
    HEADER_SIZE,
};
use ember_runtime::{Error, Model};

fn header(bytes: &[u8]) -> Header {
    let mut h = Header::zeroed();
    bytemuck::bytes_of_mut(&mut h).copy_from_slice(&bytes[..HEADER_SIZE]);
    h
}

fn put_header(bytes: &mut [u8], h: &Header) {
    bytes[..HEADER_SIZE].copy_from_slice(bytemuck::bytes_of(h));
}

fn entry(bytes: &[u8], i: usize) -> DirEntry {
    let at = header(bytes).directory.offset as usize + i * DIR_ENTRY_SIZE;
    let mut e = DirEntry::zeroed();
    bytemuck::bytes_of_mut(&mut e).copy_from_slice(&bytes[at..at + DIR_ENTRY_SIZE]);
    e
}

fn put_entry(bytes: &mut [u8], i: usize, e: &DirEntry) {
    let at = header(bytes).directory.offset as usize + i * DIR_ENTRY_SIZE;
    bytes[at..at + DIR_ENTRY_SIZE].copy_from_slice(bytemuck::bytes_of(e));
}

/// Recomputes the header checksum, so a test reaches the checks behind it.
fn reseal(bytes: &mut [u8]) {
    let data = header(bytes).data.offset as usize;
    let c = header_checksum(&bytes[..data]);
    bytes[CHECKSUM_FIELD_OFFSET..CHECKSUM_FIELD_OFFSET + 4].copy_from_slice(&c.to_le_bytes());
}

fn load_err(bytes: &[u8]) -> Error {
    match Model::from_bytes(bytes) {
        Ok(_) => panic!("damaged file loaded without error"),
        Err(e) => e,
    }
}

#[test]
fn valid_file_loads_and_verifies() {
    let bytes = common::tiny_model_bytes();
    let m = Model::from_bytes(&bytes).expect("valid file");
    m.verify_checksums().expect("checksums");
    assert_eq!(m.hparams(), &common::tiny_hparams());
    assert_eq!(
        header(&bytes).data.offset % 4096,
        0,
        "data section is page aligned"
    );
    for t in m.tensors() {
        assert_eq!(t.offset % 64, 0, "{} aligned", t.name);
    }
}

#[test]
fn wrong_magic() {
    let mut bytes = common::tiny_model_bytes();
    bytes[1] = b'X';
    assert!(matches!(load_err(&bytes), Error::BadMagic));
    assert!(matches!(
        load_err(b"GGUF\x03\0\0\0 definitely not ember"),
        Error::BadMagic
    ));
}

#[test]
fn unknown_major_version() {
    let mut bytes = common::tiny_model_bytes();
    let mut h = header(&bytes);
    h.version_major = 2;
    put_header(&mut bytes, &h);
    reseal(&mut bytes);
    assert!(matches!(
        load_err(&bytes),
        Error::UnsupportedVersion { major: 2, .. }
    ));
}

#[test]
fn newer_minor_version_is_accepted() {
    let mut bytes = common::tiny_model_bytes();
    let mut h = header(&bytes);
    h.version_minor = 7;
    put_header(&mut bytes, &h);
    reseal(&mut bytes);
    Model::from_bytes(&bytes).expect("minor versions are additive");
}

/// Files of every earlier minor version load unchanged: the 1.5 fields are
/// zero in them and mean "as before" (same logits as the current version).
#[test]
fn older_minor_versions_load_unchanged() {
    let current = common::tiny_model_bytes();
    let logits = |bytes: &[u8]| {
        let m = std::sync::Arc::new(Model::from_bytes(bytes).expect("loads"));
        let mut s = ember_runtime::Session::new(m, ember_runtime::SessionConfig::new(8)).unwrap();
        s.step(1).unwrap().to_vec()
    };
    let want = logits(&current);
    for minor in 0..ember_runtime::format::VERSION_MINOR {
        let mut bytes = current.clone();
        let mut h = header(&bytes);
        h.version_minor = minor;
        put_header(&mut bytes, &h);
        reseal(&mut bytes);
        assert_eq!(logits(&bytes), want, "version 1.{minor}");
    }
}

/// The 1.5 hyperparameter words: decoded only with the extended flag, which
/// must match them; the words after them must be zero; unknown flag bits and
/// ids are errors, never a silent default.
#[test]
fn extended_hyperparameters_are_validated() {
    use ember_runtime::format::flags;
    let edit = |f: &dyn Fn(&mut Header)| {
        let mut bytes = common::tiny_model_bytes();
        let mut h = header(&bytes);
        f(&mut h);
        put_header(&mut bytes, &h);
        reseal(&mut bytes);
        bytes
    };
    // A soft-cap with its flag loads and caps the logits.
    let capped = edit(&|h| {
        h.hparams.logit_softcap = 0.5;
        h.hparams.flags |= flags::EXTENDED;
    });
    let m = std::sync::Arc::new(Model::from_bytes(&capped).expect("soft-capped file"));
    assert_eq!(m.config().logit_softcap, Some(0.5));
    let mut s = ember_runtime::Session::new(m, ember_runtime::SessionConfig::new(8)).unwrap();
    assert!(s.step(1).unwrap().iter().all(|v| v.abs() <= 0.5));
    type Edit<'a> = &'a dyn Fn(&mut Header);
    let cases: [(&str, Edit); 6] = [
        ("field without flag", &|h| h.hparams.logit_softcap = 0.5),
        ("flag without field", &|h| {
            h.hparams.flags |= flags::EXTENDED
        }),
        ("reserved word", &|h| h.hparams.reserved[2] = 1),
        ("unknown flag", &|h| h.hparams.flags |= 1 << 20),
        ("unknown activation", &|h| h.hparams.activation = 9),
        ("negative scale", &|h| {
            h.hparams.attn_scale = -1.0;
            h.hparams.flags |= flags::EXTENDED;
        }),
    ];
    for (what, f) in cases {
        let e = load_err(&edit(f));
        assert!(
            matches!(e, Error::BadHyperParams(_) | Error::UnknownId { .. }),
            "{what}: {e}"
        );
    }
}

#[test]
fn truncation_at_every_section_boundary() {
    let bytes = common::tiny_model_bytes();
    let h = header(&bytes);
    let m = Model::from_bytes(&bytes).unwrap();
    let mut cuts = vec![0, 1, 7, 8, 100, HEADER_SIZE - 1, HEADER_SIZE];
    for s in [
        h.directory,
        h.tokenizer,
        h.chat_template,
        h.metadata,
        h.data,
    ] {
        cuts.extend([
            s.offset as usize,
            s.offset as usize + 1,
            (s.offset + s.len) as usize - 1,
        ]);
    }
    for t in m.tensors() {
        cuts.extend([t.offset as usize, (t.offset + t.nbytes) as usize - 1]);
    }
    cuts.push(bytes.len() - 1);
    for cut in cuts {
        assert!(cut < bytes.len());
        match load_err(&bytes[..cut]) {
            Error::Truncated { .. } => {}
            e => panic!("cut at {cut}: expected Truncated, got {e}"),
        }
    }
}

#[test]
fn trailing_garbage_is_rejected() {
    let mut bytes = common::tiny_model_bytes();
    bytes.extend_from_slice(&[0; 64]);
    assert!(matches!(load_err(&bytes), Error::BadHeader(_)));
}

/// FORMAT.md's MUST rules on filler: reserved header bytes, the padding
/// between the header's sections and before the data, and a tensor name's NUL
/// padding are all zero; a byte hidden there (with a valid checksum) is refused.
#[test]
fn non_zero_filler_is_rejected() {
    let clean = common::tiny_model_bytes();
    let h = header(&clean);

    let mut bytes = clean.clone();
    let mut bad = h;
    bad.reserved[17] = 1;
    put_header(&mut bytes, &bad);
    reseal(&mut bytes);
    let e = load_err(&bytes);
    assert!(e.to_string().contains("reserved"), "{e}");

    // The padding between the last section and the data section.
    let last_end = (h.metadata.offset + h.metadata.len) as usize;
    assert!(
        last_end < h.data.offset as usize,
        "the tiny file has padding"
    );
    let mut bytes = clean.clone();
    bytes[h.data.offset as usize - 1] = 0xAA;
    reseal(&mut bytes);
    let e = load_err(&bytes);
    assert!(e.to_string().contains("non-zero byte at offset"), "{e}");

    let mut bytes = clean.clone();
    let mut e0 = entry(&bytes, 0);
    let end = e0.name.iter().position(|&b| b == 0).unwrap();
    e0.name[end + 1] = b'x';
    put_entry(&mut bytes, 0, &e0);
    reseal(&mut bytes);
    assert!(matches!(load_err(&bytes), Error::BadTensorName));
}

#[test]
fn corrupted_header_checksum() {
    let mut bytes = common::tiny_model_bytes();
    bytes[CHECKSUM_FIELD_OFFSET] ^= 0x55;
    assert!(matches!(load_err(&bytes), Error::HeaderChecksum { .. }));
}

#[test]
fn tensor_offset_out_of_bounds() {
    let mut bytes = common::tiny_model_bytes();
    let mut e = entry(&bytes, 3);
    e.offset = bytes.len() as u64 + 4096;
    put_entry(&mut bytes, 3, &e);
    reseal(&mut bytes);
    assert!(matches!(load_err(&bytes), Error::TensorOutOfBounds { .. }));

    let mut bytes = common::tiny_model_bytes();
    let mut e = entry(&bytes, 0);
    e.offset = 0; // inside the header
    put_entry(&mut bytes, 0, &e);
    reseal(&mut bytes);
    assert!(matches!(load_err(&bytes), Error::TensorOutOfBounds { .. }));

    let mut bytes = common::tiny_model_bytes();
    let mut e = entry(&bytes, 0);
    e.offset = u64::MAX - 63; // end overflows
    put_entry(&mut bytes, 0, &e);
    reseal(&mut bytes);
    assert!(matches!(load_err(&bytes), Error::TensorOutOfBounds { .. }));
}

#[test]
fn misaligned_tensor() {
    let mut bytes = common::tiny_model_bytes();
    let mut e = entry(&bytes, 2);
    e.offset += 4;
    put_entry(&mut bytes, 2, &e);
    reseal(&mut bytes);
    assert!(matches!(load_err(&bytes), Error::Misaligned { .. }));
}

#[test]
fn overlapping_tensors() {
    let mut bytes = common::tiny_model_bytes();
    let first = entry(&bytes, 1);
    let mut e = entry(&bytes, 2);
    e.offset = first.offset;
    put_entry(&mut bytes, 2, &e);
    reseal(&mut bytes);
    assert!(matches!(load_err(&bytes), Error::TensorOverlap { .. }));
}

#[test]
fn shape_contradicting_hyperparameters() {
    let mut bytes = common::tiny_model_bytes();
    let mut e = entry(&bytes, 0); // tok_embeddings [vocab, dim]
    assert_eq!(e.name_str().unwrap(), "tok_embeddings");
    e.shape.swap(0, 1);
    put_entry(&mut bytes, 0, &e);
    reseal(&mut bytes);
    assert!(matches!(load_err(&bytes), Error::ShapeMismatch { .. }));

    // Same bytes but the hyperparameters say a different width.
    let mut bytes = common::tiny_model_bytes();
    let mut h = header(&bytes);
    h.hparams.ffn_dim += 1;
    put_header(&mut bytes, &h);
    reseal(&mut bytes);
    assert!(matches!(load_err(&bytes), Error::ShapeMismatch { .. }));
}

#[test]
fn wrong_byte_length_for_shape() {
    let mut bytes = common::tiny_model_bytes();
    let mut e = entry(&bytes, 1);
    e.nbytes -= 4;
    put_entry(&mut bytes, 1, &e);
    reseal(&mut bytes);
    assert!(matches!(load_err(&bytes), Error::BadTensor { .. }));
}

#[test]
fn unknown_dtype_ids() {
    for id in [3u32, 22, 31, 99, u32::MAX] {
        let mut bytes = common::tiny_model_bytes();
        let mut e = entry(&bytes, 1);
        e.dtype = id;
        put_entry(&mut bytes, 1, &e);
        reseal(&mut bytes);
        match load_err(&bytes) {
            Error::UnknownDType { id: got, .. } => assert_eq!(got, id),
            e => panic!("dtype {id}: expected UnknownDType, got {e}"),
        }
    }
}

#[test]
fn row_interleaved_dtypes_need_matrices_of_whole_tiles() {
    // q8_0x4 on a 1-D tensor (a norm vector of 32 elements).
    let mut bytes = common::tiny_model_bytes();
    let i = (0..)
        .find(|&i| entry(&bytes, i).n_dims == 1)
        .expect("the tiny model has vectors");
    let mut e = entry(&bytes, i);
    e.dtype = DType::Q8_0X4 as u32;
    e.nbytes = 34;
    put_entry(&mut bytes, i, &e);
    reseal(&mut bytes);
    match load_err(&bytes) {
        Error::BadTensor { reason, .. } => {
            assert!(reason.contains("multiple of 4"), "{reason}")
        }
        e => panic!("expected BadTensor, got {e}"),
    }
}

#[test]
fn missing_duplicate_and_unexpected_tensors() {
    let mut bytes = common::tiny_model_bytes();
    let mut e = entry(&bytes, 1);
    e.name = DirEntry::encode_name("layers.0.something_else").unwrap();
    put_entry(&mut bytes, 1, &e);
    reseal(&mut bytes);
    assert!(matches!(load_err(&bytes), Error::MissingTensor(_)));

    let mut bytes = common::tiny_model_bytes();
    let mut e = entry(&bytes, 2);
    e.name = entry(&bytes, 1).name;
    put_entry(&mut bytes, 2, &e);
    reseal(&mut bytes);
    assert!(matches!(load_err(&bytes), Error::DuplicateTensor(_)));

    let mut bytes = common::tiny_model_bytes();
    let mut e = entry(&bytes, 0);
    e.name = [0xFF; 64];
    put_entry(&mut bytes, 0, &e);
    reseal(&mut bytes);
    assert!(matches!(load_err(&bytes), Error::BadTensorName));
}

#[test]
fn unknown_hyperparameter_ids() {
    let mut bytes = common::tiny_model_bytes();
    let mut h = header(&bytes);
    h.hparams.architecture = 77;
    put_header(&mut bytes, &h);
    reseal(&mut bytes);
    assert!(matches!(
        load_err(&bytes),
        Error::UnknownId {
            what: "architecture",
            id: 77
        }
    ));

    let mut bytes = common::tiny_model_bytes();
    let mut h = header(&bytes);
    h.hparams.n_kv_heads = 3; // does not divide 4 query heads
    put_header(&mut bytes, &h);
    reseal(&mut bytes);
    assert!(matches!(load_err(&bytes), Error::BadHyperParams(_)));
}

#[test]
fn corrupt_tokenizer_section() {
    let mut bytes = common::tiny_model_bytes();
    let h = header(&bytes);
    let at = h.tokenizer.offset as usize;
    bytes[at..at + 8].fill(0xFF);
    reseal(&mut bytes);
    assert!(matches!(
        load_err(&bytes),
        Error::BadSection {
            section: "tokenizer",
            ..
        } | Error::Tokenizer(_)
    ));
}

#[test]
fn byte_flip_at_every_position_of_header_and_metadata() {
    let bytes = common::tiny_model_bytes();
    let end = header(&bytes).data.offset as usize;
    for i in 0..end {
        let mut b = bytes.clone();
        b[i] ^= 0x5A;
        // Must fail cleanly: the checksum covers every one of these bytes.
        let _ = load_err(&b);
    }
}

#[test]
fn tensor_data_corruption_is_found_by_verify() {
    let mut bytes = common::tiny_model_bytes();
    let m = Model::from_bytes(&bytes).unwrap();
    let t = m.tensors()[5].clone();
    drop(m);
    bytes[t.offset as usize + 3] ^= 1;
    let m = Model::from_bytes(&bytes).expect("tensor data is not checked at load");
    match m.verify_checksums() {
        Err(Error::TensorChecksum { name, .. }) => assert_eq!(name, t.name),
        other => panic!("expected TensorChecksum, got {other:?}"),
    }
}

#[test]
fn missing_file_is_an_io_error() {
    let err = Model::load("/nonexistent/model.ember").unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/model.ember"));
}

/// The tiny model with q8_0 matrices, rotated (the writer's default policy).
fn tiny_rotated_q8_bytes() -> Vec<u8> {
    use ember_converter::writer::{write_model, WriteOptions};
    let dir = common::scratch();
    let path = dir.path().join("tiny-q8.ember");
    let opts = WriteOptions {
        dtype: ember_converter::DTypeChoice::Fixed(DType::Q8_0),
        ..Default::default()
    };
    write_model(&common::tiny_ir(), &path, &opts).expect("write tiny q8_0 model");
    std::fs::read(&path).expect("read tiny model")
}

#[test]
fn unknown_tensor_flags_and_rotation_outside_block_matrices() {
    // Bit 1 is not defined; ROTATED on an f32 matrix and on an f32 vector.
    let bytes = common::tiny_model_bytes();
    let matrix = (0..).find(|&i| entry(&bytes, i).n_dims == 2).unwrap();
    let vector = (0..).find(|&i| entry(&bytes, i).n_dims == 1).unwrap();
    for (i, flags, want) in [
        (matrix, 2u32, "unknown flag bits 0x2"),
        (
            matrix,
            tensor_flags::ROTATED,
            "only block-quantized matrices",
        ),
        (
            vector,
            tensor_flags::ROTATED,
            "only block-quantized matrices",
        ),
    ] {
        let mut bytes = bytes.clone();
        let mut e = entry(&bytes, i);
        e.flags = flags;
        put_entry(&mut bytes, i, &e);
        reseal(&mut bytes);
        match load_err(&bytes) {
            Error::BadTensor { reason, .. } => assert!(reason.contains(want), "{reason}"),
            e => panic!("flags {flags:#x}: expected BadTensor, got {e}"),
        }
    }
}

#[test]
fn matrices_sharing_an_input_must_agree_on_rotation() {
    let bytes = tiny_rotated_q8_bytes();
    let m = Model::from_bytes(&bytes).expect("valid rotated file");
    assert!(m
        .tensors()
        .iter()
        .all(|t| t.rotated == t.dtype.is_quantized()));
    // Unflag wk of layer 0: wq and wv still want a rotated input.
    let wk = m.file().by_name["layers.0.wk"];
    let mut bad = bytes.clone();
    let mut e = entry(&bad, wk);
    e.flags = 0;
    put_entry(&mut bad, wk, &e);
    reseal(&mut bad);
    match load_err(&bad) {
        Error::BadTensor { name, reason } => {
            assert_eq!(name, "layers.0.wk");
            assert!(reason.contains("same input"), "{reason}");
        }
        e => panic!("expected BadTensor, got {e}"),
    }
    // A matrix alone in its group (wo) may be unrotated: the file still loads.
    let wo = m.file().by_name["layers.0.wo"];
    let mut ok = bytes;
    let mut e = entry(&ok, wo);
    e.flags = 0;
    put_entry(&mut ok, wo, &e);
    reseal(&mut ok);
    let m = Model::from_bytes(&ok).expect("an unrotated wo is valid");
    assert!(!m.tensors()[wo].rotated);
}
