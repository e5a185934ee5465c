//! Any request (method, path, query, headers, body; see the format in `src/lib.rs`)
//! through every entry point of the emulator it names, or of all seven.
#![no_main]

use keytrap_core::Exchange;
use keytrap_fuzz::{drive, parse, request};
use keytrap_trap::emulator::{form_pairs, MemoryOrderBook};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = parse(data);
    let targets: Vec<Exchange> = match input.exchange {
        Some(x) => vec![x],
        None => Exchange::ALL.to_vec(),
    };
    for x in targets {
        let req = request(&input, x);
        // The helpers every emulator reads parameters with.
        let _ = req.query_params();
        let _ = req.form_params();
        let _ = req.json_body();
        let _ = req.param("symbol");
        let _ = form_pairs(&req.path);
        drive(x, &req, &MemoryOrderBook::default());
    }
});
