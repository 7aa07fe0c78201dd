//! `crunch`: the command line. Everything is in the library half of this crate (`lib.rs`),
//! which the Python package (`crates/crunch-py`) drives through the same parser.

fn main() {
    crunch_cli::main()
}
