//! `form_pairs` and `percent_decode` on any text, with the properties they promise.
#![no_main]

use keytrap_fuzz::encode;
use keytrap_trap::emulator::{form_pairs, percent_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let decoded = percent_decode(&s);
    // Decoding never grows the text (each escape or `+` shrinks or keeps it; lossy
    // replacement of a bad byte sequence is 3 bytes for at least 3 escape bytes).
    assert!(decoded.len() <= s.len(), "{s:?} -> {decoded:?}");
    // Text without escapes or `+` decodes to itself.
    if !s.contains(['%', '+']) {
        assert_eq!(decoded, s);
    }
    // Anything encoded the way clients encode decodes back exactly.
    assert_eq!(percent_decode(&encode(&s)), s);
    let pairs = form_pairs(&s);
    assert!(pairs.len() <= s.split('&').count());
    // Re-encoding the pairs and parsing again is stable.
    let again: String = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(form_pairs(&again), pairs);
});
