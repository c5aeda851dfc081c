//! Fuzzes `fluxgate_gitlab::parse_hook` with arbitrary bodies: it must return,
//! never panic, and what it returns must be well formed.

#![no_main]

use fluxgate_core::UnixMillis;
use fluxgate_gitlab::{ParsedHook, parse_hook};
use libfuzzer_sys::fuzz_target;

const RECEIVED_AT: UnixMillis = UnixMillis(1_767_225_600_000);

fuzz_target!(|body: &[u8]| {
    match parse_hook(body, RECEIVED_AT) {
        Ok(ParsedHook::Records { records, .. }) => assert!(!records.is_empty()),
        Ok(ParsedHook::Ignored { kind }) => {
            let kind = kind.as_str();
            assert!(!kind.is_empty() && kind.len() <= 64)
        }
        Err(error) => assert!(!error.message.is_empty()),
    }
});
