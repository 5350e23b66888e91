//! How one fuzz input stands for several values: `S` selector bytes (missing
//! ones read as 0), then parts, each a little-endian `u32` length followed by
//! that many bytes. A length past the end of the input takes the rest; parts
//! missing at the end are empty, and bytes after the last part are ignored.
//! Every byte string is a valid framing, so no mutation leaves the format.

/// The selector bytes and the first `n_parts` parts of `data`.
pub fn split<const S: usize>(data: &[u8], n_parts: usize) -> ([u8; S], Vec<&[u8]>) {
    let mut selectors = [0u8; S];
    let k = data.len().min(S);
    selectors[..k].copy_from_slice(&data[..k]);
    let mut rest = &data[k..];
    let mut parts = Vec::with_capacity(n_parts);
    for _ in 0..n_parts {
        if rest.len() < 4 {
            parts.push(&[][..]);
            rest = &[];
            continue;
        }
        let (len, tail) = rest.split_at(4);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let (part, tail) = tail.split_at(len.min(tail.len()));
        parts.push(part);
        rest = tail;
    }
    (selectors, parts)
}

/// The input that [`split`] reads back as `selectors` and `parts`.
pub fn join(selectors: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out = selectors.to_vec();
    for p in parts {
        let len = u32::try_from(p.len()).expect("a part is under 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tolerates_any_bytes() {
        let data = join(&[7, 9], &[b"ab", b"", b"cde"]);
        let (sel, parts) = split::<2>(&data, 4);
        assert_eq!(sel, [7, 9]);
        assert_eq!(parts, [&b"ab"[..], b"", b"cde", b""]);
        let (sel, parts) = split::<3>(&[1, 2], 2);
        assert_eq!(sel, [1, 2, 0]);
        assert_eq!(parts, [&b""[..], b""]);
        let (_, parts) = split::<0>(&[255, 255, 255, 255, 1, 2], 1);
        assert_eq!(parts, [&[1u8, 2][..]]);
    }
}
