//! `crunch pack` / `crunch unpack` (owned by the packing work, issue 3).
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct PackArgs {
    /// File or model directory to pack.
    pub path: PathBuf,
    /// Where to write the packed output.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct UnpackArgs {
    /// Packed file to restore.
    pub path: PathBuf,
    /// Where to write the restored file or directory.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn pack(_args: PackArgs) -> anyhow::Result<()> {
    anyhow::bail!("crunch pack is not built yet")
}

pub fn unpack(_args: UnpackArgs) -> anyhow::Result<()> {
    anyhow::bail!("crunch unpack is not built yet")
}
