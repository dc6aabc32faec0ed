//! GGUF reader: valid files round-trip; malformed ones give errors, never panics.

use anyhow::{Result, bail};
use hearth_kernels::WeightType;
use hearth_models::ModelError;
use hearth_models::gguf::{GgufFile, MetaValue};

use crate::support::{GgufWriter, open_model, s, strings};

fn small_file() -> GgufWriter {
    GgufWriter::default()
        .kv("general.architecture", s("llama"))
        .kv("llama.embedding_length", MetaValue::U32(8))
        .kv("llama.rope.freq_base", MetaValue::F32(10000.0))
        .kv("llama.signed", MetaValue::I32(-3))
        .kv("flag", MetaValue::Bool(true))
        .kv("tokens", strings(["a", "b", "ab"]))
        .kv(
            "nested",
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::U8(1), MetaValue::U8(2)]),
                MetaValue::Array(vec![MetaValue::U8(3)]),
            ]),
        )
        .kv("wide", MetaValue::F64(0.5))
        .f32_tensor(
            "norm.weight",
            &[8],
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        )
        .f32_tensor(
            "proj.weight",
            &[4, 3],
            &(0..12).map(|v| v as f32).collect::<Vec<_>>(),
        )
}

fn open_bytes(bytes: &[u8]) -> Result<std::result::Result<GgufFile, ModelError>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, bytes)?;
    Ok(GgufFile::open(&path))
}

#[test]
fn valid_file_round_trips_metadata_and_tensors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = small_file().write(&dir, "m.gguf")?;
    let gguf = GgufFile::open(&path)?;
    assert_eq!(gguf.version(), 3);
    assert_eq!(gguf.architecture()?, "llama");
    assert_eq!(gguf.get_u32("llama.embedding_length")?, 8);
    assert_eq!(gguf.get_f32("llama.rope.freq_base")?, 10000.0);
    assert_eq!(gguf.get_f32("wide")?, 0.5);
    assert_eq!(gguf.get_bool_opt("flag")?, Some(true));
    assert_eq!(gguf.get_u32_opt("absent")?, None);
    assert!(matches!(
        gguf.get_u32("absent"),
        Err(ModelError::MissingKey { .. })
    ));
    assert!(matches!(
        gguf.get_u32("llama.signed"),
        Err(ModelError::WrongKeyType { .. })
    ));
    assert!(matches!(
        gguf.get_str("flag"),
        Err(ModelError::WrongKeyType { .. })
    ));
    let nested = gguf
        .get("nested")
        .and_then(MetaValue::as_array)
        .map(<[_]>::len);
    assert_eq!(nested, Some(2));
    assert_eq!(gguf.tensors().len(), 2);
    let norm = gguf.tensor("norm.weight")?;
    assert_eq!(norm.to_f32()?, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let proj = gguf.tensor("proj.weight")?;
    let m = proj.matrix()?;
    assert_eq!((m.rows(), m.cols(), m.ty()), (3, 4, WeightType::F32));
    assert_eq!(proj.to_f32()?[5], 5.0);
    let start = proj.info.offset as usize;
    assert_eq!(
        &gguf.data_section()[start..start + proj.data.len()],
        proj.data
    );
    assert!(gguf.has_tensor("proj.weight") && !gguf.has_tensor("nope"));
    assert!(matches!(
        gguf.tensor("nope"),
        Err(ModelError::MissingTensor { .. })
    ));
    Ok(())
}

#[test]
fn version_2_is_read_like_version_3() -> Result<()> {
    let mut writer = small_file();
    writer.version = 2;
    let gguf = open_bytes(&writer.build())??;
    assert_eq!(gguf.version(), 2);
    assert_eq!(gguf.tensor("norm.weight")?.to_f32()?.len(), 8);
    Ok(())
}

#[test]
fn custom_alignment_is_honoured() -> Result<()> {
    let mut writer = small_file().kv("general.alignment", MetaValue::U32(64));
    writer.alignment = 64;
    let gguf = open_bytes(&writer.build())??;
    assert_eq!(gguf.alignment(), 64);
    assert_eq!(gguf.data_offset() % 64, 0);
    assert_eq!(gguf.tensor("proj.weight")?.to_f32()?[11], 11.0);
    Ok(())
}

#[test]
fn every_truncation_is_an_error() -> Result<()> {
    let bytes = small_file().build();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cut.gguf");
    for len in 0..bytes.len() {
        std::fs::write(&path, &bytes[..len])?;
        if GgufFile::open(&path).is_ok() {
            bail!("a file cut to {len} of {} bytes opened", bytes.len());
        }
    }
    std::fs::write(&path, &bytes)?;
    GgufFile::open(&path)?;
    Ok(())
}

#[test]
fn zero_length_file_is_truncated() -> Result<()> {
    assert!(matches!(
        open_bytes(&[])?,
        Err(ModelError::Truncated { .. })
    ));
    Ok(())
}

#[test]
fn wrong_magic_is_rejected() -> Result<()> {
    let mut bytes = small_file().build();
    bytes[..4].copy_from_slice(b"GGML");
    let err = open_bytes(&bytes)?.err();
    assert!(matches!(err, Some(ModelError::BadMagic { .. })), "{err:?}");
    Ok(())
}

#[test]
fn unsupported_versions_are_rejected() -> Result<()> {
    for version in [0u32, 1, 4, u32::MAX] {
        let mut writer = small_file();
        writer.version = version;
        let err = open_bytes(&writer.build())?.err();
        assert!(
            matches!(err, Some(ModelError::UnsupportedVersion { version: v, .. }) if v == version),
            "{err:?}"
        );
    }
    Ok(())
}

#[test]
fn unknown_tensor_type_is_rejected() -> Result<()> {
    let writer = small_file().raw_tensor("odd", &[4], 99, vec![0; 16]);
    let err = open_bytes(&writer.build())?.err();
    assert!(
        matches!(&err, Some(ModelError::UnknownTensorType { type_id: 99, tensor, .. }) if tensor == "odd"),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn tensor_data_out_of_bounds_is_rejected() -> Result<()> {
    let mut writer = small_file();
    writer.tensors[1].offset_override = Some(1 << 20);
    let err = open_bytes(&writer.build())?.err();
    assert!(matches!(err, Some(ModelError::Truncated { .. })), "{err:?}");
    // An offset that overflows when added to the data start.
    writer.tensors[1].offset_override = Some(u64::MAX - 31);
    assert!(open_bytes(&writer.build())?.is_err());
    Ok(())
}

#[test]
fn misaligned_tensor_offset_is_rejected() -> Result<()> {
    let mut writer = small_file();
    writer.tensors[1].offset_override = Some(36);
    let err = open_bytes(&writer.build())?.err();
    assert!(matches!(err, Some(ModelError::Corrupt { .. })), "{err:?}");
    Ok(())
}

#[test]
fn absurd_string_length_is_rejected_before_allocating() -> Result<()> {
    let mut bytes = small_file().build();
    // The first key's length field follows magic, version and the two counts.
    bytes[24..32].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let err = open_bytes(&bytes)?.err();
    assert!(matches!(err, Some(ModelError::Truncated { .. })), "{err:?}");
    Ok(())
}

#[test]
fn absurd_counts_are_rejected() -> Result<()> {
    for field in [8..16, 16..24] {
        let mut bytes = small_file().build();
        bytes[field].copy_from_slice(&(u64::MAX).to_le_bytes());
        let err = open_bytes(&bytes)?.err();
        assert!(matches!(err, Some(ModelError::Truncated { .. })), "{err:?}");
    }
    Ok(())
}

#[test]
fn duplicate_tensor_is_rejected() -> Result<()> {
    let writer = small_file().f32_tensor("norm.weight", &[1], &[0.0]);
    let err = open_bytes(&writer.build())?.err();
    assert!(matches!(err, Some(ModelError::Corrupt { .. })), "{err:?}");
    Ok(())
}

#[test]
fn duplicate_key_is_rejected() -> Result<()> {
    let writer = small_file().kv("flag", MetaValue::Bool(false));
    assert!(matches!(
        open_bytes(&writer.build())?,
        Err(ModelError::Corrupt { .. })
    ));
    Ok(())
}

#[test]
fn row_width_not_a_block_multiple_is_rejected() -> Result<()> {
    // Q8_0 (id 8): 32 values per 34-byte block; a 33-wide row is invalid.
    let writer = small_file().raw_tensor("q", &[33, 1], 8, vec![0; 68]);
    assert!(matches!(
        open_bytes(&writer.build())?,
        Err(ModelError::Corrupt { .. })
    ));
    Ok(())
}

#[test]
fn quantized_tensor_shape_and_size_are_checked() -> Result<()> {
    let writer = small_file().raw_tensor("q", &[64, 2], 8, vec![0; 4 * 34]);
    let gguf = open_bytes(&writer.build())??;
    let m = gguf.tensor("q")?.matrix()?;
    assert_eq!(
        (m.rows(), m.cols(), m.ty(), m.data().len()),
        (2, 64, WeightType::Q8_0, 136)
    );
    Ok(())
}

#[test]
fn quantized_tensor_dequantizes_through_the_kernels() -> Result<()> {
    // One Q8_0 block per row: an f16 scale, then 32 signed bytes.
    let mut data = Vec::new();
    for row in 0..2i32 {
        data.extend_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        data.extend((0..32).map(|i| (i - 16 + row) as i8 as u8));
    }
    let writer = small_file().raw_tensor("q", &[32, 2], 8, data);
    let gguf = open_bytes(&writer.build())??;
    let values = gguf.tensor("q")?.to_f32()?;
    let expected: Vec<f32> = (0..2)
        .flat_map(|row| (0..32).map(move |i| (i - 16 + row) as f32 * 0.5))
        .collect();
    assert_eq!(values, expected);
    Ok(())
}

#[test]
fn too_many_dims_or_huge_shape_is_rejected() -> Result<()> {
    let writer = small_file().raw_tensor("five", &[1, 1, 1, 1, 1], 0, vec![0; 4]);
    assert!(matches!(
        open_bytes(&writer.build())?,
        Err(ModelError::Corrupt { .. })
    ));
    let writer = small_file().raw_tensor("huge", &[u64::MAX, 2], 0, vec![0; 4]);
    assert!(open_bytes(&writer.build())?.is_err());
    Ok(())
}

#[test]
fn bad_alignment_is_rejected() -> Result<()> {
    for value in [
        MetaValue::U32(0),
        MetaValue::U32(48),
        MetaValue::String("32".into()),
    ] {
        let writer = small_file().kv("general.alignment", value);
        assert!(matches!(
            open_bytes(&writer.build())?,
            Err(ModelError::Corrupt { .. })
        ));
    }
    Ok(())
}

/// Random byte flips anywhere in the header (deterministic xorshift) must
/// give a file that opens or an error, never a panic.
#[test]
fn random_header_corruption_never_panics() -> Result<()> {
    let bytes = small_file().build();
    let header_len = bytes.len().min(400);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("flip.gguf");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..1500 {
        let mut corrupted = bytes.clone();
        let flips = 1 + next() % 4;
        for _ in 0..flips {
            let at = (next() % header_len as u64) as usize;
            corrupted[at] = next() as u8;
        }
        std::fs::write(&path, &corrupted)?;
        if let Ok(gguf) = GgufFile::open(&path) {
            // Whatever opened must be readable without panics too.
            for info in gguf.tensors() {
                let view = gguf.tensor(&info.name)?;
                let _ = view.matrix();
                if view.info.ty == WeightType::F32 {
                    let _ = view.to_f32();
                }
            }
        }
    }
    Ok(())
}

#[test]
fn errors_name_the_file() -> Result<()> {
    let err = open_bytes(b"GGUF")?
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("model.gguf") && err.contains("truncated"),
        "{err}"
    );
    Ok(())
}

#[test]
fn smollm2_opens_with_expected_header() -> Result<()> {
    let gguf = open_model("smollm2-135m-instruct")?;
    assert_eq!(gguf.tensors().len(), 272);
    assert_eq!(gguf.architecture()?, "llama");
    assert_eq!(gguf.get_u32("llama.embedding_length")?, 576);
    let embd = gguf.tensor("token_embd.weight")?;
    assert_eq!(embd.info.dims, vec![576, 49152]);
    let norm = gguf.tensor("output_norm.weight")?.to_f32()?;
    assert_eq!(norm.len(), 576);
    assert!(norm.iter().all(|v| v.is_finite()));
    for info in gguf.tensors() {
        let matrix = gguf.tensor(&info.name)?.matrix()?;
        assert_eq!(
            (matrix.cols() as u64, matrix.rows() as u64),
            (info.cols(), info.rows())
        );
    }
    let q = gguf.tensor("blk.0.attn_q.weight")?.to_f32()?;
    assert_eq!(q.len(), 576 * 576);
    assert!(q.iter().all(|v| v.is_finite()) && q.iter().any(|&v| v != 0.0));
    Ok(())
}

#[test]
fn gemma3_opens_with_expected_header() -> Result<()> {
    let gguf = open_model("gemma3-270m")?;
    assert_eq!(gguf.architecture()?, "gemma3");
    assert_eq!(gguf.get_str("tokenizer.ggml.model")?, "llama");
    for info in gguf.tensors() {
        gguf.tensor(&info.name)?.matrix()?;
    }
    Ok(())
}
