//! Codec payloads (src/compress): every chunk codec's decoder on a payload of the length
//! its encoder produces. It never fails except on a top-k index outside the chunk, is a pure
//! function of the bytes, `decode_add` adds exactly what `decode` gives, and fp16/bf16
//! payloads re-encode to the same values.
//!
//! Input: codec (1 byte), its parameter (1 byte), element count (2 bytes, at most 4096),
//! then the payload (zero-padded or cut to the encoded length).
#![no_main]

use ferrocoll::compress::{chunk_codec, Codec};

/// Equal bits, or both NaN.
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((head, payload)) = data.split_first_chunk::<4>() else {
        return;
    };
    let p = usize::from(head[1]);
    let codec = match head[0] % 6 {
        0 => Codec::Fp16,
        1 => Codec::Bf16,
        2 => Codec::Fp8E4M3 { block: p + 1 },
        3 => Codec::Fp8E5M2 { block: p + 1 },
        4 => Codec::OneBit { block: p + 1 },
        _ => Codec::TopK {
            fraction: (p + 1) as f64 / 256.0,
        },
    };
    let n = usize::from(u16::from_le_bytes([head[2], head[3]])) % 4097;
    let c = chunk_codec(codec).expect("a valid codec");
    let len = c.encoded_len(n);
    let mut bytes = payload[..payload.len().min(len)].to_vec();
    bytes.resize(len, 0);

    let mut out = vec![0f32; n];
    let r = c.decode(&bytes, &mut out);
    if let Codec::TopK { .. } = codec {
        // Indices first, then values; u32::MAX marks an unused slot.
        let k = len / 8;
        let bad = bytes[..4 * k]
            .chunks(4)
            .map(|i| u32::from_le_bytes([i[0], i[1], i[2], i[3]]))
            .any(|i| i != u32::MAX && i as usize >= n);
        assert_eq!(r.is_err(), bad, "{codec}: {r:?}");
    } else {
        assert!(r.is_ok(), "{codec}: {r:?}");
    }
    if r.is_err() {
        return;
    }
    let mut again = vec![1f32; n];
    c.decode(&bytes, &mut again).expect("decoded once");
    assert!(
        out.iter().zip(&again).all(|(a, b)| same(*a, *b)),
        "{codec}: not pure"
    );

    let base: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 7.0).collect();
    let mut sum = base.clone();
    c.decode_add(&bytes, &mut sum).expect("decoded once");
    for i in 0..n {
        assert!(same(sum[i], base[i] + out[i]), "{codec}: element {i}");
    }

    if matches!(codec, Codec::Fp16 | Codec::Bf16) {
        let mut re = vec![0u8; len];
        c.encode(&out, &mut re);
        let mut back = vec![0f32; n];
        c.decode(&re, &mut back).expect("an encoder's bytes decode");
        assert!(
            out.iter().zip(&back).all(|(a, b)| same(*a, *b)),
            "{codec}: re-encoding moved a value"
        );
    }
});
