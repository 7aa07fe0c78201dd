//! `crunch`: the thin command-line front end. Each subcommand parses its flags here and calls
//! into the library crates; no algorithm lives in this crate.

mod pack;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "crunch", version, about = "Make large language models smaller and faster, and measure the damage.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pack a checkpoint file or directory losslessly.
    Pack(pack::PackArgs),
    /// Restore a packed checkpoint bit for bit.
    Unpack(pack::UnpackArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pack(args) => pack::pack(args),
        Command::Unpack(args) => pack::unpack(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
