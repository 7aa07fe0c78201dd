//! The server's request parser (`crunch_serve::api::parse`) on arbitrary bodies, for both
//! endpoints: it must return a request or an error, never panic, and an error is always a
//! 4xx naming what is wrong.
#![no_main]
use crunch_serve::api::{parse, Kind, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    for kind in [Kind::Completion, Kind::Chat] {
        if let Err(e) = parse(kind, data, &limits) {
            assert!((400..500).contains(&e.status), "{e:?}");
            assert!(!e.message.is_empty());
        }
    }
});
