//! Any bytes opened as a safetensors file must give an error or tensors that read back,
//! never a panic. The reader maps files, so each input goes through one scratch file (on
//! tmpfs where available) rather than a byte-slice entry point.
#![no_main]

use crunch_formats::safetensors::SafetensorsFile;
use crunch_formats::TensorSource;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("crunch-fuzz-{}.safetensors", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).expect("write scratch file");
    let Ok(file) = SafetensorsFile::open(path) else {
        return;
    };
    for t in file.tensors() {
        let raw = file.raw(&t.name).expect("listed tensor has bytes");
        if let Ok(values) = file.read_f32(&t.name) {
            assert_eq!(values.len(), t.numel());
            assert_eq!(raw.len(), t.numel() * t.dtype.block().1);
        }
    }
});
