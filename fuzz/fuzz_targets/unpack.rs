//! Any bytes given to the unpacker must give an error or exactly the bytes that were packed,
//! never a panic, a hang or a huge allocation. Inputs that are not packs are also packed and
//! unpacked, which must round-trip bit for bit (this reaches the format detectors too).
#![no_main]

use crunch_pack::{pack_bytes, unpack_bytes, PackOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Packs that claim more than 64 MiB of output are refused before decoding.
    let _ = unpack_bytes(data, 64 << 20);
    let opts = PackOptions {
        threads: 1,
        chunk_size: 1 + data.first().copied().unwrap_or(0) as usize * 16,
        ..PackOptions::default()
    };
    let (packed, _) = pack_bytes("fuzz.bin", data, &opts).expect("packing bytes cannot fail");
    let files = unpack_bytes(&packed, u64::MAX).expect("a fresh pack must unpack");
    assert!(files.len() == 1 && files[0].1 == data, "round trip differs");
});
