//! GPT-2's reversible byte-to-character alphabet used by byte-level BPE vocabularies.
//!
//! Printable bytes (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`) stand for themselves; every other
//! byte `b` is assigned the character `U+0100 + k`, where `k` counts the non-printable
//! bytes below `b`. So space (0x20) is `Ġ` (U+0120) and newline (0x0A) is `Ċ` (U+010A).

/// True for the bytes GPT-2 keeps as their own Latin-1 character.
const fn is_printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The alphabet's character for each byte.
pub(crate) const BYTE_TO_CHAR: [char; 256] = build_byte_to_char();

/// Number of code points the alphabet spans (`U+0000..U+0144`).
pub(crate) const ALPHABET_SPAN: usize = 0x144;

const fn build_byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let cp = if is_printable(b as u8) {
            b as u32
        } else {
            extra += 1;
            0x100 + extra - 1
        };
        table[b] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

/// The byte a character of the alphabet stands for; `None` for characters outside it.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    // Inverse table built once; the alphabet is tiny so a linear-time build is fine.
    static INVERSE: std::sync::OnceLock<[Option<u8>; ALPHABET_SPAN]> = std::sync::OnceLock::new();
    let inv = INVERSE.get_or_init(|| {
        let mut inv = [None; ALPHABET_SPAN];
        for (b, &ch) in BYTE_TO_CHAR.iter().enumerate() {
            inv[ch as usize] = Some(b as u8);
        }
        inv
    });
    inv.get(c as usize).copied().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_a_bijection_with_known_points() {
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[b'a' as usize], 'a');
        assert_eq!(BYTE_TO_CHAR[0xAD], 'Ń');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(BYTE_TO_CHAR[b as usize]), Some(b));
        }
        assert_eq!(char_to_byte('€'), None);
    }
}
