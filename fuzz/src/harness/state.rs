//! Targets for what a session reads besides the model: prompt caches (session
//! state) and PEFT LoRA adapters. Both run on fixed models ([`model`]).

use std::sync::Arc;

use ember_runtime::lora::peft;
use ember_runtime::{argmax, ContextPolicy, KvType, SessionConfig};

use super::fixtures::{model, present, with_files, with_session};
use super::frame;

/// The session a `session_state` selector byte names: bit 0 the model (`tiny`,
/// 16 positions; or `gemma3`, sliding-window layers, 32 positions), bits 1-2
/// the KV type (`KvType::ALL`, modulo 3), bit 3 the shift context policy
/// (keep 2) instead of the error policy.
pub fn state_session(selector: u8) -> (&'static str, SessionConfig) {
    let (name, context) = if selector & 1 == 0 {
        ("tiny", 16)
    } else {
        ("gemma3", 32)
    };
    let config = SessionConfig {
        kv_type: KvType::ALL[usize::from(selector >> 1 & 3) % KvType::ALL.len()],
        batch: 2,
        context_policy: if selector & 8 != 0 {
            ContextPolicy::Shift { keep: 2 }
        } else {
            ContextPolicy::Error
        },
        ..SessionConfig::new(context)
    };
    (name, config)
}

/// Selector bit 4 of `session_state`: the input's last 4 bytes are replaced by
/// the CRC-32 of the rest, so that mutated contents pass the checksum and
/// reach the checks after it and the forward pass.
pub const FIX_CRC: u8 = 16;

/// Prompt-cache reader (`Session::read_state`, what `load_state` and the C
/// API's state calls run). Input: a selector byte ([`state_session`],
/// [`FIX_CRC`]), then the state bytes. Contracts checked: a refused state
/// leaves the session reset; an accepted one holds at most `context` tokens,
/// writes back to bytes that read back to the same state and application
/// data, and the session then decodes a token.
pub fn session_state(data: &[u8]) {
    let Some((&selector, state)) = data.split_first() else {
        return;
    };
    let fixed;
    let state = if selector & FIX_CRC != 0 && state.len() >= 4 {
        let body = &state[..state.len() - 4];
        fixed = [body, &crc32(body).to_le_bytes()].concat();
        &fixed[..]
    } else {
        state
    };
    let (name, config) = state_session(selector);
    with_session(name, config, |s| {
        let app = match s.read_state(state) {
            Ok(app) => app,
            Err(_) => {
                assert!(
                    s.pos() == 0 && !s.has_logits(),
                    "a refused state leaves the session reset"
                );
                return;
            }
        };
        assert!(s.pos() <= config.context && s.tokens().len() == s.pos());
        let mut saved = Vec::new();
        s.write_state(&mut saved, &app).expect("write to memory");
        let (pos, tokens) = (s.pos(), s.tokens().to_vec());
        let again = s
            .read_state(&saved[..])
            .unwrap_or_else(|e| panic!("a state the session wrote reads back: {e}"));
        assert_eq!(again, app);
        assert_eq!((s.pos(), s.tokens()), (pos, &tokens[..]));
        let mut saved_again = Vec::new();
        s.write_state(&mut saved_again, &app)
            .expect("write to memory");
        assert!(
            saved_again == saved,
            "a restored state writes back the same bytes"
        );
        if s.has_logits() {
            argmax(s.logits());
        }
        let next = tokens.last().copied().unwrap_or(0);
        let shifts = matches!(config.context_policy, ContextPolicy::Shift { .. });
        if pos < config.context || shifts {
            let logits = s
                .step(next)
                .unwrap_or_else(|e| panic!("decode after a restored state failed: {e}"));
            argmax(logits);
        }
    });
}

/// CRC-32 (IEEE, reflected, as `crc32fast` and zlib compute it).
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !bytes.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

/// Base models of the `peft` target: the `tests/fixtures/hf-tiny` checkpoints
/// the `tests/fixtures/lora` adapters were trained for.
pub const PEFT_BASES: [&str; 4] = ["llama", "phi3", "qwen3", "gemma3"];

/// Scales a `peft` input applies its adapter with, including ones
/// `Session::set_lora` must refuse.
const LORA_SCALES: [f32; 8] = [1.0, 0.5, -1.0, 0.0, 2.0, 1e30, f32::NAN, f32::INFINITY];

/// PEFT adapter reader (`lora::peft::load_peft`, what `ember run --lora` and
/// `ember_lora_load` run). Input: two selector bytes (base model from
/// [`PEFT_BASES`], scale), then two parts ([`frame`]): `adapter_config.json`
/// and `adapter_model.safetensors` (an empty part is an absent file).
/// Contracts checked: an accepted adapter fits the model, and a session with
/// it attached prefills and decodes.
pub fn peft(data: &[u8]) {
    let ([base, scale], parts) = frame::split::<2>(data, 2);
    let name = PEFT_BASES[usize::from(base) % PEFT_BASES.len()];
    let scale = LORA_SCALES[usize::from(scale) % LORA_SCALES.len()];
    let model = model(name);
    let files = [
        ("adapter_config.json", present(parts[0])),
        ("adapter_model.safetensors", present(parts[1])),
    ];
    with_files(&files, |dir| {
        let _ = peft::read_config(dir);
        let Ok(adapter) = peft::load_peft(dir, model.hparams()) else {
            return;
        };
        adapter
            .validate(model.hparams())
            .expect("load_peft returns an adapter that fits the model");
        let config = SessionConfig {
            batch: 2,
            ..SessionConfig::new(4)
        };
        with_session(name, config, |s| {
            if s.set_lora(Some(Arc::new(adapter)), scale).is_ok() {
                s.prefill(&[1, 2, 3])
                    .unwrap_or_else(|e| panic!("prefill with an adapter failed: {e}"));
                let logits = s
                    .step(4)
                    .unwrap_or_else(|e| panic!("decode with an adapter failed: {e}"));
                argmax(logits);
            }
            s.set_lora(None, 1.0).expect("detach the adapter");
        });
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(super::crc32(b""), 0);
    }
}
