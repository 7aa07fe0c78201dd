//! Any bytes given to the GGUF reader, dequantizer and tokenizer builder must give an error
//! or a value, never a panic, a hang or a huge allocation.
#![no_main]

use crunch_formats::gguf::{build_tokenizer, GgufFile};
use crunch_formats::TensorSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes("fuzz.gguf", data.to_vec()) else {
        return;
    };
    for t in file.tensors() {
        let _ = file.raw(&t.name);
        if let Ok(values) = file.read_f32(&t.name) {
            assert_eq!(values.len(), t.numel());
        }
    }
    if let Ok(tokenizer) = build_tokenizer(&file) {
        let _ = tokenizer.encode("Hello 123 <|endoftext|>", true);
    }
});
