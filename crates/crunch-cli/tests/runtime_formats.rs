//! crunch's own quantized format on the CPU runtime: `crunch quantize` output loaded by the
//! host backend keeps its layers packed (the codes rewritten as GGUF blocks, see
//! crunch-repr's `gguf_blocks.rs`), and its logits match the candle path that dequantizes
//! every layer to f32 on load within 1e-3 (max |diff| / max |logit|), for every grid the
//! rewrite covers.

use crunch_formats::DType;
use crunch_model::testing::{reference_ids, relative_error, tiny_dir, tiny_specs};
use crunch_model::{Checkpoint, Model};
use crunch_runtime::{Backend, Cpu, Host};
use std::process::Command;

#[test]
fn crunch_format_runs_packed_and_matches_the_dequantized_path() {
    let dir = tiny_dir(&tiny_specs()[0]);
    for (bits, sym, want) in [
        ("4", true, DType::Q4_0),
        ("4", false, DType::Q4_1),
        ("3", false, DType::Q4_0),
        ("2", true, DType::Q4_0),
        ("8", true, DType::Q8_0),
    ] {
        let out = dir.path().join(format!("q{bits}{sym}"));
        let mut args = vec![
            "quantize",
            dir.path().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--method",
            "rtn",
            "--bits",
            bits,
            "--group-size",
            "32",
        ];
        if sym {
            args.push("--sym");
        }
        let o = Command::new(env!("CARGO_BIN_EXE_crunch"))
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ckpt = Checkpoint::open(&out).unwrap();
        let dense: Model<Cpu> = ckpt.load(Cpu, |_| {}).unwrap();
        let packed: Model<Host> = ckpt.load(Host, |_| {}).unwrap();
        let q = packed.blocks[0].q.weight.packed().expect("packed q_proj");
        assert_eq!(q.dtype(), want, "{bits}-bit sym={sym}");
        let ids = reference_ids(dense.config.vocab, 16);
        let a = Cpu.to_f32(&dense.forward(&ids).unwrap()).unwrap();
        let b = Host.to_f32(&packed.forward(&ids).unwrap()).unwrap();
        let err = relative_error(&b, &a);
        println!("{bits}-bit sym={sym} as {want:?}: packed vs dequantized {err:.2e}");
        assert!(err < 1e-3, "{bits}-bit sym={sym}: {err}");
    }
}
