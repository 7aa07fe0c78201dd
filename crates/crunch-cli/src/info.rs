//! `crunch info MODEL`

use anyhow::Result;
use clap::Args;
use crunch_model::Checkpoint;
use std::path::PathBuf;

#[derive(Args)]
pub struct InfoArgs {
    /// Model directory or GGUF file.
    pub model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let ckpt = Checkpoint::open(&args.model)?;
    let s = ckpt.summary();
    let c = &ckpt.config;
    if args.json {
        let dtypes: serde_json::Map<_, _> = s
            .dtypes
            .iter()
            .map(|(k, (t, p))| {
                (
                    k.clone(),
                    serde_json::json!({"tensors": t, "parameters": p}),
                )
            })
            .collect();
        let mut v = serde_json::json!({
            "path": s.path,
            "format": format!("{:?}", s.format),
            "architecture": s.architecture,
            "parameters": s.parameters,
            "tensors": s.tensors,
            "dtypes": dtypes,
            "bytes_on_disk": s.bytes_on_disk,
            "hidden_size": c.hidden,
            "intermediate_size": c.intermediate,
            "layers": c.layers,
            "heads": c.heads,
            "kv_heads": c.kv_heads,
            "head_dim": c.head_dim,
            "vocab_size": c.vocab,
            "tied_embeddings": c.tie_embeddings,
        });
        if let Some(m) = &c.moe {
            v["experts"] = serde_json::json!({
                "count": m.experts,
                "per_token": m.top_k,
                "intermediate_size": m.intermediate,
                "sparse_layers": m.sparse_layers.iter().filter(|&&s| s).count(),
            });
        }
        crate::report::json(v);
        return Ok(());
    }
    println!("{}", s.path.display());
    println!("  format        {:?}", s.format);
    println!("  architecture  {}", s.architecture);
    println!(
        "  parameters    {} ({:.1} M)",
        s.parameters,
        s.parameters as f64 / 1e6
    );
    println!(
        "  shape         {} layers, hidden {}, mlp {}, {} heads / {} kv heads of {}, vocab {}{}",
        c.layers,
        c.hidden,
        c.intermediate,
        c.heads,
        c.kv_heads,
        c.head_dim,
        c.vocab,
        if c.tie_embeddings {
            ", tied embeddings"
        } else {
            ""
        }
    );
    if let Some(m) = &c.moe {
        println!(
            "  experts       {} of width {}, {} per token, in {} of {} layers",
            m.experts,
            m.intermediate,
            m.top_k,
            m.sparse_layers.iter().filter(|&&s| s).count(),
            c.layers
        );
    }
    println!("  tensors       {}", s.tensors);
    for (dtype, (t, p)) in &s.dtypes {
        println!("    {dtype:<6} {t:>5} tensors {p:>12} parameters");
    }
    println!(
        "  on disk       {} bytes ({:.1} MB)",
        s.bytes_on_disk,
        s.bytes_on_disk as f64 / 1e6
    );
    Ok(())
}
