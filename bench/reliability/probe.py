#!/usr/bin/env python3
"""Reliability probe (issue 11): drives the release `crunch` binary over generated bad inputs the
way a careless or hostile user would, and counts the outcomes per class of input.

Every input is made here (tiny Llama models as safetensors directories and GGUF files, with a
word-level tokenizer; corrupted copies of them; nonsense configs; extreme flags; bad data files;
dangerous output paths; signals mid-run; a file truncated while it is read), plus a few
metadata edits of the real SmolLM2 GGUF when its path is given. Each run is classified:

  clean error  exit 1 (or clap's 2) with an `error:` message, no panic
  ok           exit 0 where the input is valid (controls), or a mutation that left it valid
  panic        a Rust panic (exit 101 or "panicked")
  crash        killed by a signal, aborted, or over the time limit
  silent wrong exit 0 on an input that is known to be bad (it must be refused)
  modified     an input file's bytes (or an unrelated file near the output) changed
  leftover     a temporary output (.NAME.tmp-PID) left behind by a run that ended

Prints one JSON line per run to --log (default .cache/reliability/runs.jsonl) and a summary
table (markdown) on stdout; `--json` prints the summary as JSON instead.

Usage: bench/reliability/probe.py [--crunch target/release/crunch] [--smollm2 PATH.gguf]
       [--mutations N] [--json]
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ---------------------------------------------------------------------------------------------
# Tiny models, written from scratch (no crunch code involved).

CFG = dict(hidden=64, inter=160, layers=2, heads=4, kv=2, vocab=128)
LINEARS = [("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
           ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
           ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down")]


def tensor_list():
    h, i, hd = CFG["hidden"], CFG["inter"], CFG["hidden"] // CFG["heads"]
    q, kv = CFG["heads"] * hd, CFG["kv"] * hd
    out = [("model.embed_tokens.weight", "token_embd.weight", [CFG["vocab"], h])]
    for l in range(CFG["layers"]):
        p, g = f"model.layers.{l}", f"blk.{l}"
        out.append((f"{p}.input_layernorm.weight", f"{g}.attn_norm.weight", [h]))
        out.append((f"{p}.post_attention_layernorm.weight", f"{g}.ffn_norm.weight", [h]))
        shapes = {"self_attn.q_proj": [q, h], "self_attn.k_proj": [kv, h],
                  "self_attn.v_proj": [kv, h], "self_attn.o_proj": [h, q],
                  "mlp.gate_proj": [i, h], "mlp.up_proj": [i, h], "mlp.down_proj": [h, i]}
        for hf, gg in LINEARS:
            out.append((f"{p}.{hf}.weight", f"{g}.{gg}.weight", shapes[hf]))
    out.append(("model.norm.weight", "output_norm.weight", [h]))
    out.append(("lm_head.weight", "output.weight", [CFG["vocab"], h]))
    return out


def values(name, shape, rng):
    n = 1
    for d in shape:
        n *= d
    if name.endswith("norm.weight"):
        return [1.0 + 0.2 * (rng.random() - 0.5) for _ in range(n)]
    scale = 1.0 if ("embed" in name or "lm_head" in name) else 1.7 / (shape[1] ** 0.5)
    return [scale * (2 * rng.random() - 1) for _ in range(n)]


def f32_bytes(vals):
    return struct.pack(f"<{len(vals)}f", *vals)


def safetensors_bytes(tensors):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, off = {}, 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors)


def hf_config():
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": CFG["hidden"], "intermediate_size": CFG["inter"],
            "num_hidden_layers": CFG["layers"], "num_attention_heads": CFG["heads"],
            "num_key_value_heads": CFG["kv"], "vocab_size": CFG["vocab"],
            "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 1}


def tokenizer_json():
    vocab = {f"w{i}": i for i in range(CFG["vocab"])}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": None, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": None, "decoder": None,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"}}


def write_hf(d, tensors=None, config=None, tokenizer=True):
    os.makedirs(d, exist_ok=True)
    rng = random.Random(1)
    if tensors is None:
        tensors = [(hf, "F32", shape, f32_bytes(values(hf, shape, rng)))
                   for hf, _, shape in tensor_list()]
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(safetensors_bytes(tensors))
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write(config if isinstance(config, str) else json.dumps(config or hf_config()))
    if tokenizer:
        with open(os.path.join(d, "tokenizer.json"), "w") as f:
            json.dump(tokenizer_json(), f)
    return d


# GGUF (v3) writer.
def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(ty, v):
    fmt = {0: "<B", 4: "<I", 5: "<i", 6: "<f", 10: "<Q", 11: "<q", 12: "<d", 7: "<B"}
    if ty == 8:
        return gguf_str(v)
    if ty == 9:
        ety, items = v
        return struct.pack("<IQ", ety, len(items)) + b"".join(gguf_value(ety, x) for x in items)
    return struct.pack(fmt[ty], v)


def gguf_metadata():
    h, hd = CFG["hidden"], CFG["hidden"] // CFG["heads"]
    # Byte-level BPE with no merges: every printable ASCII byte is a token ("Ġ" is the space).
    words = ["Ġ", "Ċ"] + [chr(c) for c in range(33, 127)]
    words += [f"<x{i}>" for i in range(CFG["vocab"] - len(words))]
    return [("general.architecture", 8, "llama"), ("llama.block_count", 4, CFG["layers"]),
            ("llama.embedding_length", 4, h), ("llama.feed_forward_length", 4, CFG["inter"]),
            ("llama.attention.head_count", 4, CFG["heads"]),
            ("llama.attention.head_count_kv", 4, CFG["kv"]),
            ("llama.attention.key_length", 4, hd), ("llama.vocab_size", 4, CFG["vocab"]),
            ("llama.rope.freq_base", 6, 10000.0),
            ("llama.attention.layer_norm_rms_epsilon", 6, 1e-5),
            ("tokenizer.ggml.model", 8, "gpt2"), ("tokenizer.ggml.pre", 8, "default"),
            ("tokenizer.ggml.tokens", 9, (8, words)),
            ("tokenizer.ggml.token_type", 9, (5, [1] * len(words))),
            ("tokenizer.ggml.merges", 9, (8, []))]


def gguf_bytes(meta, tensors, align=32):
    """tensors: (name, shape row-major, raw f32 bytes)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    for k, ty, v in meta:
        out += gguf_str(k) + struct.pack("<I", ty) + gguf_value(ty, v)
    off, infos, datas = 0, b"", b""
    for name, shape, raw in tensors:
        ne = list(reversed(shape))
        infos += gguf_str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        infos += struct.pack("<IQ", 0, off)
        pad = -len(raw) % align
        datas += raw + b"\0" * pad
        off += len(raw) + pad
    out += infos
    out += b"\0" * (-len(out) % align)
    return out + datas


def tiny_gguf_parts():
    rng = random.Random(1)
    return gguf_metadata(), [(gg, shape, f32_bytes(values(hf, shape, rng)))
                             for hf, gg, shape in tensor_list()]


def set_meta(meta, key, ty, v):
    meta = [m for m in meta if m[0] != key]
    return meta + [(key, ty, v)]


# Locating a metadata value inside a real GGUF, to edit it in place.
def gguf_value_offsets(path):
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    with open(path, "rb") as f:
        b = f.read(32 << 20)
    pos, found = 24, {}
    n_kv = struct.unpack_from("<Q", b, 16)[0]

    def skip(ty, pos):
        if ty == 8:
            return pos + 8 + struct.unpack_from("<Q", b, pos)[0]
        if ty == 9:
            ety, n = struct.unpack_from("<IQ", b, pos)
            pos += 12
            if ety in sizes:
                return pos + n * sizes[ety]
            for _ in range(n):
                pos = skip(ety, pos)
            return pos
        return pos + sizes[ty]
    for _ in range(n_kv):
        klen = struct.unpack_from("<Q", b, pos)[0]
        key = b[pos + 8:pos + 8 + klen].decode()
        pos += 8 + klen
        ty = struct.unpack_from("<I", b, pos)[0]
        pos += 4
        found[key] = (ty, pos)
        pos = skip(ty, pos)
    return found


# ---------------------------------------------------------------------------------------------
# Running and classifying.

def digest(paths):
    out = {}
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in os.walk(p):
                for n in files:
                    q = os.path.join(root, n)
                    out[q] = hashlib.sha256(open(q, "rb").read()).hexdigest()
        elif os.path.exists(p):
            out[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


class Probe:
    def __init__(self, crunch, log, timeout):
        self.crunch, self.log, self.timeout = crunch, log, timeout
        self.rows = []

    def run(self, cls, args, expect, inputs=(), watch_dir=None, during=None, env=None):
        """expect: 'error' (bad input, must be refused), 'ok' (valid), 'any' (mutation).
        inputs: files/dirs that must not change. watch_dir: where leftovers are looked for.
        during: callable(proc) run while the command runs (signals, truncation)."""
        before = digest(inputs)
        t = time.time()
        p = subprocess.Popen([self.crunch, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env)
        status = None
        if during:
            status = during(p)
        try:
            out, err = p.communicate(timeout=self.timeout)
            hung = False
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            hung = True
        secs = time.time() - t
        err = err.decode("utf-8", "replace")
        code = p.returncode
        after = digest(inputs)
        modified = before != after
        leftovers = []
        if watch_dir and os.path.isdir(watch_dir):
            leftovers = [n for n in os.listdir(watch_dir) if ".tmp-" in n or ".old-" in n]
        panic = "panicked" in err or code == 101
        if hung or (code is not None and (code < 0 or code in (134, 137, 139))):
            outcome = "crash"
        elif panic:
            outcome = "panic"
        elif code == 0:
            ok = expect in ("ok", "any") or status == "late"
            outcome = "ok" if ok else "silent wrong"
        elif code == 130 and status == "interrupted":
            outcome = "clean error"
        elif code in (1, 2) and "error" in err:
            outcome = "clean error" if expect in ("error", "any") else "unexpected error"
        else:
            outcome = "unexpected error"
        row = {"class": cls, "args": [str(a) for a in args], "expect": expect, "code": code,
               "outcome": outcome, "modified": modified, "leftovers": leftovers,
               "seconds": round(secs, 3), "stderr": err.strip().splitlines()[-1:] }
        self.rows.append(row)
        self.log.write(json.dumps(row) + "\n")
        self.log.flush()
        return row


def mutate(rng, b):
    b = bytearray(b)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(b)) if b else 0
        k = rng.randrange(6)
        if k == 0 and b:
            b[at] ^= 1 << rng.randrange(8)
        elif k == 1 and b:
            b[at] = rng.randrange(256)
        elif k == 2 and b:
            v = rng.choice([0, 1, 0xFFFFFFFF, 1 << 32, 1 << 62, (1 << 64) - 1, 2**31 - 1])
            chunk = struct.pack("<Q", v)[: max(0, min(8, len(b) - at))]
            b[at:at + len(chunk)] = chunk
        elif k == 3:
            del b[at:at + rng.randint(1, 64)]
        elif k == 4:
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            del b[at:]
    return bytes(b)


def words(n, seed=0):
    rng = random.Random(seed)
    return " ".join(f"w{rng.randrange(CFG['vocab'])}" for _ in range(n))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crunch", default=os.path.join(ROOT, "target/release/crunch"))
    ap.add_argument("--smollm2", help="SmolLM2 GGUF (scripts/fetch-smollm2) for real-model cases")
    ap.add_argument("--mutations", type=int, default=120, help="random mutations per file kind")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--log", default=os.path.join(ROOT, ".cache/reliability/runs.jsonl"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    os.makedirs(os.path.dirname(a.log), exist_ok=True)
    work = tempfile.mkdtemp(prefix="crunch-probe-")
    log = open(a.log, "w")
    P = Probe(os.path.abspath(a.crunch), log, a.timeout)
    rng = random.Random(0)
    W = lambda *p: os.path.join(work, *p)
    start = time.time()

    # Valid inputs and data.
    good = write_hf(W("good"))
    meta, tens = tiny_gguf_parts()
    good_gguf = W("good.gguf")
    open(good_gguf, "wb").write(gguf_bytes(meta, tens))
    text = W("text.txt")
    open(text, "w").write(words(3000))
    n = [0]

    def out():
        n[0] += 1
        return W("outs", f"o{n[0]}")
    os.makedirs(W("outs"))
    outs = W("outs")

    def quant(model, cls, expect, extra=(), inputs=None):
        return P.run(cls, ["quantize", model, "--out", out(), "--method", "rtn", "--group-size",
                           "32", *extra], expect, inputs or [model], outs)

    def ev(model, cls, expect, data=text, extra=()):
        return P.run(cls, ["eval", model, "--data", data, "--ctx", "64", *extra], expect,
                     [model, data], outs)

    # Controls: the valid inputs work.
    for m in (good, good_gguf):
        P.run("controls (valid inputs)", ["info", m], "ok", [m])
        quant(m, "controls (valid inputs)", "ok")
        ev(m, "controls (valid inputs)", "ok")
    P.run("controls (valid inputs)", ["quantize", good, "--out", out(), "--method", "gptq",
          "--group-size", "32", "--calib", text, "--calib-samples", "4", "--calib-len", "32"],
          "ok", [good, text], outs)

    # 1. GGUF metadata that lies (tiny GGUF).
    cls = "GGUF metadata: sizes, counts, non-finite values"
    cases = [("llama.block_count", 4, 2**32 - 1), ("llama.block_count", 10, 2**64 - 1),
             ("llama.block_count", 4, 0), ("llama.block_count", 4, 1), ("llama.block_count", 4, 3),
             ("llama.embedding_length", 4, 2**32 - 1), ("llama.embedding_length", 4, 0),
             ("llama.embedding_length", 4, 32), ("llama.feed_forward_length", 4, 2**32 - 1),
             ("llama.feed_forward_length", 4, 96), ("llama.attention.head_count", 4, 0),
             ("llama.attention.head_count", 4, 2**32 - 1), ("llama.attention.head_count", 4, 3),
             ("llama.attention.head_count_kv", 4, 8), ("llama.attention.head_count_kv", 4, 3),
             ("llama.attention.key_length", 4, 2**31), ("llama.attention.key_length", 4, 15),
             ("llama.vocab_size", 4, 2**32 - 1), ("llama.vocab_size", 4, 64),
             ("llama.attention.layer_norm_rms_epsilon", 6, float("nan")),
             ("llama.attention.layer_norm_rms_epsilon", 6, float("inf")),
             ("llama.attention.layer_norm_rms_epsilon", 6, -1.0),
             ("llama.attention.layer_norm_rms_epsilon", 6, 0.0),
             ("llama.rope.freq_base", 6, float("nan")), ("llama.rope.freq_base", 6, float("-inf")),
             ("llama.rope.freq_base", 6, 0.0), ("llama.rope.freq_base", 8, "ten thousand"),
             ("llama.block_count", 8, "2"), ("general.architecture", 8, "gpt-j")]
    for key, ty, v in cases:
        p = W(f"meta-{n[0]}-{key}.gguf")
        n[0] += 1
        open(p, "wb").write(gguf_bytes(set_meta(meta, key, ty, v), tens))
        P.run(cls, ["info", p], "error", [p])
        quant(p, cls, "error")
        ev(p, cls, "error")

    # 2. GGUF tensors: missing, extra block, wrong shape, NaN/inf values, truncation.
    cls = "GGUF tensors: missing, extra, wrong shape, non-finite, truncated"
    variants = []
    variants.append(("missing", [t for t in tens if t[0] != "blk.1.ffn_up.weight"]))
    extra = [(t[0].replace("blk.1.", "blk.2."), t[1], t[2]) for t in tens if t[0].startswith("blk.1.")]
    variants.append(("extra block", tens + extra))
    variants.append(("scalar", [(t[0], [] if t[0] == "blk.0.attn_q.weight" else t[1],
                                 t[2][:4] if t[0] == "blk.0.attn_q.weight" else t[2]) for t in tens]))
    variants.append(("transposed", [(t[0], t[1][::-1] if t[0] == "blk.0.ffn_down.weight" else t[1], t[2])
                                    for t in tens]))
    for name in ("blk.0.attn_q.weight", "blk.1.ffn_norm.weight", "output_norm.weight",
                 "token_embd.weight", "output.weight"):
        for bad in (float("nan"), float("inf")):
            variants.append((f"{name}={bad}", [(t[0], t[1], t[2][:8] + struct.pack("<f", bad) + t[2][12:])
                                               if t[0] == name else t for t in tens]))
    for label, ts in variants:
        p = W(f"tens-{n[0]}.gguf")
        n[0] += 1
        open(p, "wb").write(gguf_bytes(meta, ts))
        quant(p, cls, "error")
        ev(p, cls, "error")
    gb = open(good_gguf, "rb").read()
    for i in range(20):
        p = W(f"trunc-{i}.gguf")
        open(p, "wb").write(gb[: rng.randrange(len(gb))])
        quant(p, cls, "error")

    # 3. Random byte mutations of the GGUF (meaning unknown: a flipped weight bit is a valid
    # model, so exit 0 counts as ok; what matters is no panic, crash or modified input).
    cls = "GGUF random byte mutations"
    for i in range(a.mutations):
        p = W(f"mut-{i}.gguf")
        open(p, "wb").write(mutate(rng, gb))
        quant(p, cls, "any")

    # 4. config.json nonsense (tiny HF directory).
    cls = "config.json: sizes, counts, types, non-finite values"
    for key, v in [("num_hidden_layers", 2**64 - 1), ("num_hidden_layers", -1),
                   ("num_hidden_layers", 1.5), ("num_hidden_layers", "2"), ("num_hidden_layers", 1),
                   ("num_hidden_layers", 3), ("num_hidden_layers", 0), ("hidden_size", 2**32 - 1),
                   ("hidden_size", 32), ("intermediate_size", 2**40), ("vocab_size", 2**40),
                   ("vocab_size", 100), ("num_attention_heads", 0), ("num_attention_heads", 3),
                   ("num_key_value_heads", 3), ("num_key_value_heads", 8), ("head_dim", 15),
                   ("head_dim", 2**33), ("rms_norm_eps", "x"), ("rms_norm_eps", 0),
                   ("rms_norm_eps", -1e-6), ("rms_norm_eps", 1e300), ("rope_theta", 0),
                   ("rope_theta", -5), ("rope_theta", "big"), ("rope_theta", 1e400),
                   ("rope_scaling", {"rope_type": "linear", "factor": 0}),
                   ("rope_scaling", {"rope_type": "llama3", "factor": 8}),
                   ("rope_scaling", {"rope_type": "yarn", "factor": 2}),
                   ("model_type", "bloom"), ("hidden_act", "gelu"), ("max_position_embeddings", -3)]:
        c = hf_config()
        c[key] = v
        txt = json.dumps(c).replace("Infinity", "1e400")
        d = write_hf(W(f"cfg-{n[0]}"), config=txt)
        n[0] += 1
        P.run(cls, ["info", d], "error", [d])
        quant(d, cls, "error")
    for txt in ["", "{", "[]", "null", '{"model_type": "llama"}', "\xff\xfe", "{" * 100000]:
        d = write_hf(W(f"cfg-{n[0]}"), config=txt)
        n[0] += 1
        P.run(cls, ["info", d], "error", [d])

    # 5. safetensors structure and values.
    cls = "safetensors: shapes, dtypes, non-finite, trailing bytes, header lies"
    rng1 = random.Random(1)
    base = [(hf, "F32", shape, f32_bytes(values(hf, shape, rng1))) for hf, _, shape in tensor_list()]
    st_variants = []
    st_variants.append([(t[0], t[1], [] if t[0].endswith("1.mlp.down_proj.weight") else t[2],
                         t[3][:4] if t[0].endswith("1.mlp.down_proj.weight") else t[3]) for t in base])
    st_variants.append([(t[0], "I32" if t[0] == "model.norm.weight" else t[1], t[2], t[3]) for t in base])
    st_variants.append([(t[0], t[1], t[2][::-1] if t[0].endswith("0.mlp.up_proj.weight") else t[2], t[3])
                        for t in base])
    st_variants.append([t for t in base if t[0] != "model.layers.1.self_attn.v_proj.weight"])
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.input_layernorm.weight",
                 "model.norm.weight", "model.embed_tokens.weight", "lm_head.weight"):
        for bad in (float("nan"), float("-inf")):
            st_variants.append([(t[0], t[1], t[2], t[3][:4] + struct.pack("<f", bad) + t[3][8:])
                                if t[0] == name else t for t in base])
    for ts in st_variants:
        d = write_hf(W(f"st-{n[0]}"), tensors=ts)
        n[0] += 1
        quant(d, cls, "error")
        ev(d, cls, "error")
    sb = open(os.path.join(good, "model.safetensors"), "rb").read()
    hlen = struct.unpack_from("<Q", sb)[0]
    for label, bts in [("trailing", sb + b"appended"), ("truncated", sb[:-100]),
                       ("header len lie", struct.pack("<Q", 2**63) + sb[8:]),
                       ("huge header len", struct.pack("<Q", len(sb) - 8) + sb[8:]),
                       ("empty", b""), ("short", sb[:7])]:
        d = write_hf(W(f"st-{n[0]}"))
        n[0] += 1
        open(os.path.join(d, "model.safetensors"), "wb").write(bts)
        quant(d, cls, "error")
    cls = "safetensors random byte mutations"
    for i in range(a.mutations):
        d = write_hf(W(f"stm-{i}"), tokenizer=False)
        open(os.path.join(d, "model.safetensors"), "wb").write(mutate(rng, sb))
        quant(d, cls, "any")

    # 6. Tokenizer files.
    cls = "tokenizer.json corrupt"
    for txt in ["{", '{"model": 3}', "", json.dumps({"version": "1.0"})]:
        d = write_hf(W(f"tok-{n[0]}"))
        n[0] += 1
        open(os.path.join(d, "tokenizer.json"), "w").write(txt)
        quant(d, cls, "error")
        ev(d, cls, "error")

    # 7. Command-line numbers.
    cls = "command-line numbers"
    g = good
    bad_flags = [["--threads", "100000"], ["--threads", "17"], ["--threads", "-1"]]
    for f in bad_flags:
        P.run(cls, [*f, "info", g], "error", [g])
    for f in [["--group-size", "1"], ["--group-size", "7"], ["--group-size", "100000"],
              ["--group-size", "-5"], ["--bits", "0"], ["--bits", "1"], ["--bits", "5"],
              ["--bits", "16"], ["--bits", "300"],
              ["--group-size", "48", "--format", "compressed-tensors"],
              ["--group-size", "48", "--format", "gptq"]]:
        P.run(cls, ["quantize", g, "--out", out(), "--method", "rtn", *f], "error", [g], outs)
    gq = ["quantize", g, "--out", None, "--method", "gptq", "--group-size", "32", "--calib", text]
    for f in [["--calib-samples", "1000000000"], ["--calib-samples", "0"],
              ["--calib-len", "0"], ["--calib-len", "1000000000"],
              ["--calib-samples", "100000", "--calib-len", "16"], ["--damp", "NaN"],
              ["--damp", "-1"], ["--damp", "inf"]]:
        args = list(gq)
        args[3] = out()
        P.run(cls, [*args, *f], "error", [g, text], outs)
    for spec in ["self:0x16", "self:1000000x1000000", "self:4x0", "self:-1x4", "self:4x100000"]:
        P.run(cls, ["quantize", g, "--out", out(), "--method", "gptq", "--group-size", "32",
                    "--calib", spec], "error", [g], outs)
    for f in [["--ctx", "0"], ["--ctx", "1"], ["--max-tokens", "0"], ["--max-tokens", "10"],
              ["--ctx", "99999999999999999999"]]:
        P.run(cls, ["eval", g, "--data", text, *f], "error", [g, text])
    for f in [["--sparsity", "-1"], ["--sparsity", "1.5"], ["--sparsity", "NaN"],
              ["--pattern", "0:4"], ["--pattern", "5:4"], ["--pattern", "2:0"]]:
        P.run(cls, ["prune", g, "--out", out(), "--method", "magnitude", *f], "error", [g], outs)
    for gs in ["1", "100000"]:
        P.run(cls, ["prune", g, "--out", out(), "--method", "sparsegpt", "--pattern", "2:4",
                    "--bits", "4", "--group-size", gs, "--calib", "self:4x16"], "error", [g], outs)
    for f in [["--keep", "0"], ["--keep", "1.5"], ["--keep", "NaN"],
              ["--keep", "0.5", "--eora-rank", "0"]]:
        P.run(cls, ["lowrank", g, "--out", out(), "--method", "svd", *f], "error", [g], outs)

    # 8. Data files.
    cls = "data files: empty, 2 tokens, binary, missing, a directory"
    for label, content in [("empty", b""), ("two", b"w1 w2"), ("binary", bytes(range(256)) * 4),
                           ("few", words(20).encode())]:
        p = W(f"data-{label}.txt")
        open(p, "wb").write(content)
        ev(g, cls, "error", data=p)
        P.run(cls, ["quantize", g, "--out", out(), "--method", "gptq", "--group-size", "32",
                    "--calib", p, "--calib-samples", "4", "--calib-len", "32"], "error", [g, p], outs)
    ev(g, cls, "error", data=W("absent.txt"))
    ev(g, cls, "error", data=W("outs"))

    # 9. Output paths and --force.
    cls = "output paths and --force"
    for i in range(3):
        w = W(f"force-{i}")
        os.makedirs(w)
        m = os.path.join(w, "m.gguf")
        shutil.copy(good_gguf, m)
        notes = os.path.join(w, "NOTES.txt")
        open(notes, "w").write("notes")
        user = W(f"user-{i}")
        os.makedirs(user)
        open(os.path.join(user, "thesis.tex"), "w").write("years")
        watch = [m, notes, user]
        for o in [w, work, m, user, notes]:
            for f in ([], ["--force"]):
                P.run(cls, ["quantize", m, "--out", o, "--method", "rtn", "--group-size", "32", *f],
                      "error", watch, w)
                if o == notes and f:
                    continue  # `pack --out FILE --force` replacing that one file is asked for
                P.run(cls, ["pack", m, "--out", o, *f], "error", watch, w)
        # Replacing a single named output file with --force (and only that file) is allowed.
        P.run(cls, ["pack", m, "--out", notes, "--force"], "ok", [m, user], w)
        packed = W(f"p-{i}.cpk")
        P.run(cls, ["pack", m, "--out", packed], "ok", watch, work)
        P.run(cls, ["unpack", packed, "--out", user, "--force"], "error", watch + [packed], work)
        P.run(cls, ["unpack", packed, "--out", w, "--force"], "error", watch + [packed], work)
        P.run(cls, ["quantize", m, "--out", os.path.join(notes, "sub"), "--method", "rtn",
                    "--group-size", "32"], "error", watch, w)
        P.run(cls, ["quantize", m, "--out", "", "--method", "rtn", "--group-size", "32"], "error", watch)

    # 10. Corrupt packs.
    cls = "packs: random byte mutations"
    packed = W("good.cpk")
    P.run(cls, ["pack", good, "--out", packed], "ok", [good], work)
    pb = open(packed, "rb").read()
    for i in range(a.mutations // 2):
        p = W(f"pm-{i}.cpk")
        open(p, "wb").write(mutate(rng, pb))
        P.run(cls, ["unpack", p, "--out", W(f"pm-out-{i}")], "error", [p], work)

    # 11. Signals and truncation mid-run.
    cls = "interrupted runs: SIGINT, SIGKILL then rerun, input truncated mid-read"
    big = W("big.bin")
    with open(big, "wb") as f:
        f.write(os.urandom(96 << 20))

    def signal_mid_write(o, sig, outcome):
        """A `during` hook: sends `sig` once the run's temporary output for `o` appears in the
        work folder (within 30 s), and reports `outcome`."""
        prefix = "." + os.path.basename(o) + ".tmp-"

        def during(p):
            t0 = time.time()
            while time.time() - t0 < 30 and p.poll() is None:
                if any(x.startswith(prefix) for x in os.listdir(work)):
                    p.send_signal(sig)
                    return outcome
                time.sleep(0.005)
        return during

    for i in range(5):
        o = W(f"sig-{i}.cpk")
        P.run(cls, ["pack", big, "--out", o, "--threads", "1"], "any", [big], work,
              during=signal_mid_write(o, signal.SIGINT, "interrupted"))
    for i in range(3):
        o = W(f"kill-{i}.cpk")
        r = P.run(cls + " (killed, temp expected)", ["pack", big, "--out", o, "--threads", "1"],
                  "any", [big], None, during=signal_mid_write(o, signal.SIGKILL, "killed"))
        # SIGKILL cannot be handled; the next run to the same output removes what it left.
        left = [x for x in os.listdir(work) if x.startswith("." + os.path.basename(o) + ".tmp-")]
        r["outcome"] = "clean error" if left else r["outcome"]
        P.run(cls, ["pack", good_gguf, "--out", o], "ok", [good_gguf], work)
    # An input truncated while quantize reads it: an error naming it, never a silent SIGBUS.
    truncs = [("tiny", good)]
    if a.smollm2:
        truncs.append(("smollm2", a.smollm2))
    for label, src in truncs:
        # The tiny model is read in milliseconds: only an immediate truncation lands mid-run.
        delays = [0.0] if label == "tiny" else [0.0, 0.1, 0.25, 0.5, 1.0, 2.0]
        for i, delay in enumerate(delays):
            if os.path.isdir(src):
                m = W(f"trunc-run-{label}-{i}")
                shutil.copytree(src, m)
                victim = os.path.join(m, "model.safetensors")
            else:
                m = W(f"trunc-run-{label}-{i}.gguf")
                shutil.copy(src, m)
                victim = m

            def truncate(p, victim=victim, delay=delay):
                time.sleep(delay)
                running = p.poll() is None
                with open(victim, "r+b") as f:
                    f.truncate(os.path.getsize(victim) // 3)
                # A run that had already finished read the whole file: its success is right.
                return "truncated" if running else "late"
            P.run(cls + " (truncated input)", ["quantize", m, "--out", out(), "--method", "rtn",
                                                "--group-size", "32"], "error", [], outs,
                  during=truncate)

    # 12. The real SmolLM2 GGUF with lying metadata (when given).
    if a.smollm2:
        cls = "SmolLM2 GGUF: lying metadata"
        offs = gguf_value_offsets(a.smollm2)
        data = W("smol-data.txt")
        shutil.copy(os.path.join(ROOT, "data/demo.txt"), data)
        for key, fmt, v in [("llama.block_count", "<I", 29), ("llama.block_count", "<I", 2**32 - 1),
                            ("llama.embedding_length", "<I", 2**32 - 1),
                            ("llama.attention.layer_norm_rms_epsilon", "<f", float("nan")),
                            ("llama.rope.freq_base", "<f", float("nan"))]:
            p = W(f"smol-{key}-{n[0]}.gguf")
            n[0] += 1
            shutil.copy(a.smollm2, p)
            ty, at = offs[key]
            with open(p, "r+b") as f:
                f.seek(at)
                f.write(struct.pack(fmt, v))
            P.run(cls, ["info", p], "error", [p])
            P.run(cls, ["eval", p, "--data", data, "--ctx", "128", "--max-tokens", "256"],
                  "error", [p, data])
            P.run(cls, ["quantize", p, "--out", out(), "--method", "rtn", "--group-size", "64"],
                  "error", [p], outs)
            os.remove(p)
        P.run("controls (valid inputs)", ["eval", a.smollm2, "--data", data, "--ctx", "128",
                                          "--max-tokens", "256"], "ok", [a.smollm2, data])
        short = W("two-tokens.txt")
        open(short, "w").write("Hello world")
        P.run("data files: empty, 2 tokens, binary, missing, a directory",
              ["eval", a.smollm2, "--data", short], "error", [a.smollm2, short])

    # Summary.
    classes = {}
    for r in P.rows:
        c = classes.setdefault(r["class"], {"runs": 0, "clean error": 0, "ok": 0, "panic": 0,
                                            "crash": 0, "silent wrong": 0, "unexpected error": 0,
                                            "modified": 0, "leftover": 0})
        c["runs"] += 1
        c[r["outcome"]] += 1
        c["modified"] += r["modified"]
        c["leftover"] += bool(r["leftovers"]) and "killed" not in r["class"]
    total = {k: sum(c[k] for c in classes.values()) for k in next(iter(classes.values()))}
    summary = {"classes": classes, "total": total, "seconds": round(time.time() - start, 1),
               "crunch": a.crunch, "log": a.log}
    shutil.rmtree(work, ignore_errors=True)
    if a.json:
        print(json.dumps(summary, indent=1))
        return
    cols = ["runs", "clean error", "ok", "panic", "crash", "silent wrong", "unexpected error",
            "modified", "leftover"]
    print("| class | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, c in list(classes.items()) + [("**total**", total)]:
        print(f"| {name} | " + " | ".join(str(c[k]) for k in cols) + " |")
    print(f"\n{total['runs']} runs in {summary['seconds']} s; per-run log: {a.log}")
    bad = [r for r in P.rows if r["outcome"] in ("panic", "crash", "silent wrong", "unexpected error")
           or r["modified"]]
    for r in bad[:40]:
        print("FINDING:", json.dumps(r), file=sys.stderr)


if __name__ == "__main__":
    main()
