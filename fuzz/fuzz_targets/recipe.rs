//! Any text given as a `crunch compress --recipe` file must parse to a plan or give an error,
//! never a panic; a plan that parses must survive its own TOML round trip.
#![no_main]

use crunch_calib::RecipeFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = RecipeFile::parse(text) else {
        return;
    };
    if file.plan().is_ok() {
        let again = RecipeFile::parse(&file.to_toml()).expect("own output parses");
        assert_eq!(again.plan(), file.plan());
    }
});
