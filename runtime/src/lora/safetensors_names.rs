//! A safetensors header names each tensor once. serde_json (and so the
//! `safetensors` crate) reads a JSON object with a repeated key as its last
//! value, silently dropping the other tensor; readers refuse such files instead.

use std::collections::HashSet;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Refuses a safetensors JSON header (`header_json`) that names a tensor (or
/// `__metadata__`) twice. Malformed JSON is left to the caller's own parser.
pub fn check_unique_names(header_json: &str) -> Result<(), String> {
    match serde_json::from_str::<UniqueKeys>(header_json) {
        Err(e) if e.to_string().starts_with(DUPLICATE) => Err(e.to_string()),
        _ => Ok(()),
    }
}

/// [`check_unique_names`] on a whole safetensors file image (8-byte length,
/// then the header); a file too short to hold its header passes (its parser
/// reports that).
pub fn check_unique_names_in_file(bytes: &[u8]) -> Result<(), String> {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    else {
        return Ok(());
    };
    let header = usize::try_from(len)
        .ok()
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?));
    match header.map(std::str::from_utf8) {
        Some(Ok(text)) => check_unique_names(text),
        _ => Ok(()),
    }
}

const DUPLICATE: &str = "tensor name appears twice in the header: ";

/// The keys of a JSON object, refusing a repeated one.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(KeysVisitor)
    }
}

struct KeysVisitor;

impl<'de> Visitor<'de> for KeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("{DUPLICATE}{key:?}")));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(UniqueKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_tensor_name_is_refused() {
        let t = r#"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
        assert!(check_unique_names(&format!(r#"{{"a":{t},"b":{t}}}"#)).is_ok());
        let e = check_unique_names(&format!(r#"{{"a":{t},"a":{t}}}"#)).unwrap_err();
        assert!(e.contains("\"a\"") && e.contains("twice"), "{e}");
        // Not JSON: left to the real parser.
        assert!(check_unique_names("{").is_ok());
        let header = format!(r#"{{"w":{t},"w":{t}}}"#);
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(&[0; 4]);
        assert!(check_unique_names_in_file(&file).is_err());
        assert!(check_unique_names_in_file(&file[..5]).is_ok());
    }
}
