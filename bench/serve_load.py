#!/usr/bin/env python3
"""Load and abuse test of `crunch serve`, on 127.0.0.1 only, bounded in count and time.

Usage: python3 bench/serve_load.py MODEL [--crunch target/release/crunch] [--threads 2]
       [--clients 32] [--requests 4] [--max-tokens 64] [--timeout 900]

Starts the server itself (and stops it, by its process id), then:

1. one client, `--requests` streaming chat requests in a row: tokens/s and time to first
   token (TTFT) of a lone user;
2. `--clients` concurrent clients × `--requests` streaming requests each: every stream must
   be valid server-sent events (each `data:` a JSON chunk, a finish_reason, then `[DONE]`);
   aggregate tokens/s and TTFT p50/p99;
3. 25 kinds of malformed or abusive requests, each expecting its 4xx (with an OpenAI-style
   JSON error) or a clean close, and `/health` answering afterwards;
4. a second server with one slot and a queue of one, hit by 6 requests at once: the ones
   that do not fit get 503 with Retry-After, the others complete.

Prints one JSON line per phase and a summary line; exits non-zero if any check failed.
Only Python's standard library (asyncio streams) is used as the HTTP client.
"""
import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

HOST = "127.0.0.1"


class Response:
    def __init__(self, status, headers, body, ttft=None, chunks=None):
        self.status = status
        self.headers = headers
        self.body = body
        self.ttft = ttft
        self.chunks = chunks or []


async def request(port, method, path, body=b"", headers=None, stream=False, timeout=120,
                  raw=None):
    """One HTTP/1.1 request; for streams, records the time to the first text chunk."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        if raw is not None:
            writer.write(raw)
        else:
            h = {"Host": f"{HOST}:{port}", "Connection": "close",
                 "Content-Length": str(len(body))}
            if body:
                h["Content-Type"] = "application/json"
            h.update(headers or {})
            head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
            writer.write(head.encode() + b"\r\n" + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass  # the server may answer (413) before reading a large body

        status_line = await asyncio.wait_for(reader.readline(), timeout)
        if not status_line:
            return Response(0, {}, b"")
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout)
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        chunks, ttft = [], None
        if headers.get("transfer-encoding") == "chunked":
            data = b""
            while True:
                size = int((await asyncio.wait_for(reader.readline(), timeout)).strip() or b"0", 16)
                if size == 0:
                    break
                piece = await asyncio.wait_for(reader.readexactly(size + 2), timeout)
                data += piece[:-2]
                if stream:
                    while b"\n\n" in data:
                        event, data = data.split(b"\n\n", 1)
                        for line in event.split(b"\n"):
                            if line.startswith(b"data: "):
                                payload = line[6:].decode()
                                if ttft is None and payload != "[DONE]" and text_of(payload):
                                    ttft = time.perf_counter() - t0
                                chunks.append(payload)
            body = data
        else:
            n = int(headers.get("content-length", "0"))
            body = await asyncio.wait_for(reader.readexactly(n), timeout) if n else await reader.read()
        return Response(status, headers, body, ttft, chunks)
    finally:
        writer.close()


def text_of(payload):
    try:
        c = json.loads(payload)["choices"][0]
    except (ValueError, KeyError, IndexError):
        return ""
    return (c.get("delta") or {}).get("content") or c.get("text") or ""


def check_stream(resp):
    """A valid SSE completion: JSON chunks, one finish_reason, then [DONE]. Returns the
    number of text chunks (tokens) or raises."""
    if resp.status != 200:
        raise AssertionError(f"status {resp.status}: {resp.body[:200]!r}")
    if not resp.chunks or resp.chunks[-1] != "[DONE]":
        raise AssertionError(f"stream did not end with [DONE]: {resp.chunks[-3:]}")
    finishes = 0
    tokens = 0
    for p in resp.chunks[:-1]:
        v = json.loads(p)
        if "error" in v:
            raise AssertionError(f"error in stream: {p}")
        if not v["choices"]:
            if "usage" not in v:
                raise AssertionError(f"chunk without choices or usage: {p}")
            continue
        c = v["choices"][0]
        if c.get("finish_reason"):
            finishes += 1
        if text_of(p):
            tokens += 1
    if finishes != 1:
        raise AssertionError(f"{finishes} finish reasons")
    return tokens


def chat_body(i, max_tokens, stream=True):
    topics = ["the sea", "mountains", "a city at night", "autumn", "a robot", "tea",
              "the moon", "rivers"]
    return json.dumps({
        "messages": [{"role": "user", "content": f"Write a short poem about {topics[i % len(topics)]}."}],
        "max_tokens": max_tokens, "temperature": 0.7, "seed": i, "stream": stream,
        "stream_options": {"include_usage": True},
    }).encode()


def usage_tokens(resp):
    for p in resp.chunks:
        if p != "[DONE]":
            v = json.loads(p)
            if v.get("usage"):
                return v["usage"]["completion_tokens"]
    return None


def start_server(args, port, extra=()):
    cmd = [args.crunch, "--threads", str(args.threads), "serve", args.model, "--host", HOST,
           "--port", str(port), "--ctx", "1024", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not come up")


def stop_server(proc):
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pct(values, q):
    values = sorted(values)
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


async def single_client(port, args):
    t0 = time.perf_counter()
    tokens, ttfts = 0, []
    for i in range(args.requests):
        r = await request(port, "POST", "/v1/chat/completions", chat_body(i, args.max_tokens), stream=True)
        check_stream(r)
        tokens += usage_tokens(r) or 0
        ttfts.append(r.ttft)
    wall = time.perf_counter() - t0
    return {"phase": "one_client", "requests": args.requests, "completion_tokens": tokens,
            "seconds": round(wall, 3), "tokens_per_second": round(tokens / wall, 2),
            "ttft_p50_s": round(pct(ttfts, 50), 4), "ttft_p99_s": round(pct(ttfts, 99), 4)}


async def many_clients(port, args):
    failures, ttfts, tokens = [], [], 0

    async def client(c):
        nonlocal tokens
        for j in range(args.requests):
            i = c * args.requests + j
            try:
                r = await request(port, "POST", "/v1/chat/completions", chat_body(i, args.max_tokens), stream=True)
                check_stream(r)
                tokens += usage_tokens(r) or 0
                ttfts.append(r.ttft)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                failures.append(f"client {c} request {j}: {e}")

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(args.clients)))
    wall = time.perf_counter() - t0
    return {"phase": "concurrent", "clients": args.clients, "requests_per_client": args.requests,
            "completed": len(ttfts), "failed": len(failures), "failures": failures[:5],
            "completion_tokens": tokens, "seconds": round(wall, 3),
            "tokens_per_second": round(tokens / wall, 2),
            "ttft_p50_s": round(pct(ttfts, 50), 4) if ttfts else None,
            "ttft_p99_s": round(pct(ttfts, 99), 4) if ttfts else None}


def malformed_cases(model_name):
    comp, chat = "/v1/completions", "/v1/chat/completions"
    j = lambda o: json.dumps(o).encode()  # noqa: E731
    return [
        ("invalid JSON", "POST", comp, b"{\"prompt\": ", 400),
        ("JSON array body", "POST", comp, b"[1, 2, 3]", 400),
        ("missing prompt", "POST", comp, j({"max_tokens": 4}), 400),
        ("prompt is a number", "POST", comp, j({"prompt": 42}), 400),
        ("empty prompt", "POST", comp, j({"prompt": ""}), 400),
        ("max_tokens is a string", "POST", comp, j({"prompt": "a", "max_tokens": "4"}), 400),
        ("max_tokens is 0", "POST", comp, j({"prompt": "a", "max_tokens": 0}), 400),
        ("huge max_tokens", "POST", comp, j({"prompt": "a", "max_tokens": 10 ** 9}), 400),
        ("negative max_tokens", "POST", comp, j({"prompt": "a", "max_tokens": -5}), 400),
        ("temperature out of range", "POST", comp, j({"prompt": "a", "temperature": 7}), 400),
        ("top_p is a string", "POST", comp, j({"prompt": "a", "top_p": "high"}), 400),
        ("stream is a string", "POST", comp, j({"prompt": "a", "stream": "yes"}), 400),
        ("stop holds numbers", "POST", comp, j({"prompt": "a", "stop": [1, 2]}), 400),
        ("n = 3", "POST", comp, j({"prompt": "a", "n": 3}), 400),
        ("unknown model", "POST", comp, j({"prompt": "a", "model": "no-such-model"}), 404),
        ("missing messages", "POST", chat, j({"max_tokens": 4}), 400),
        ("empty messages", "POST", chat, j({"messages": []}), 400),
        ("unknown role", "POST", chat, j({"messages": [{"role": "pirate", "content": "a"}]}), 400),
        ("oversized body", "POST", comp, j({"prompt": "x" * (2 << 20)}), 413),
        ("prompt longer than the context", "POST", comp, j({"prompt": "hello " * 3000}), 400),
        ("unknown endpoint", "POST", "/v1/engines", j({}), 404),
        ("wrong method", "GET", chat, b"", 405),
        ("not UTF-8", "POST", comp, b"\xff\xfe\x00garbage", 400),
    ]


async def malformed(port, args):
    results, failures = [], []
    for name, method, path, body, want in malformed_cases(None):
        try:
            r = await request(port, method, path, body)
            ok = r.status == want
            if ok and want != 200:
                err = json.loads(r.body)["error"]
                ok = isinstance(err.get("message"), str) and err["message"] != ""
            results.append({"case": name, "status": r.status, "expected": want, "ok": ok})
            if not ok:
                failures.append(f"{name}: got {r.status} {r.body[:120]!r}")
        except Exception as e:  # noqa: BLE001
            failures.append(f"{name}: {e}")
    # Client disconnect mid-stream: read two chunks, then hang up.
    reader, writer = await asyncio.open_connection(HOST, port)
    body = chat_body(0, 200)
    writer.write(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    got = b""
    while b"data:" not in got:
        piece = await asyncio.wait_for(reader.read(2000), 120)
        if not piece:
            break
        got += piece
    writer.close()
    results.append({"case": "client disconnects mid-stream", "ok": b"data:" in got})
    # Half a body, then hang up.
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"prompt\": \"hel")
    await writer.drain()
    writer.close()
    results.append({"case": "truncated body, client gone", "ok": True})
    await asyncio.sleep(1.0)
    r = await request(port, "GET", "/health")
    health = json.loads(r.body) if r.status == 200 else {}
    ok_health = r.status == 200 and health.get("status") == "ok"
    if not ok_health:
        failures.append(f"/health after the abuse: {r.status} {r.body!r}")
    # The disconnected stream's slot is freed (nothing left active after a moment).
    for _ in range(20):
        if health.get("active") == 0:
            break
        await asyncio.sleep(0.5)
        health = json.loads((await request(port, "GET", "/health")).body)
    if health.get("active") != 0:
        failures.append(f"a request is still active after its client left: {health}")
    return {"phase": "malformed", "kinds": len(results), "failed": len(failures),
            "failures": failures, "health_after": health, "cases": results}


async def queue_full(port, args):
    async def one(i):
        return await request(port, "POST", "/v1/chat/completions", chat_body(i, 48, stream=False))
    rs = await asyncio.gather(*(one(i) for i in range(6)))
    codes = [r.status for r in rs]
    busy = [r for r in rs if r.status == 503]
    ok = (len(busy) >= 1 and all(r.headers.get("retry-after") for r in busy)
          and all(c in (200, 503) for c in codes) and codes.count(200) >= 2)
    return {"phase": "queue_full", "statuses": codes, "ok": ok}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--crunch", default="target/release/crunch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--port", type=int, default=18437)
    ap.add_argument("--timeout", type=int, default=900, help="the whole run, seconds")
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(SystemExit("time limit reached")))
    signal.alarm(args.timeout)
    ok = True
    proc = start_server(args, args.port)
    try:
        one = asyncio.run(single_client(args.port, args))
        print(json.dumps(one), flush=True)
        many = asyncio.run(many_clients(args.port, args))
        print(json.dumps(many), flush=True)
        ok &= many["failed"] == 0 and many["completed"] == args.clients * args.requests
        bad = asyncio.run(malformed(args.port, args))
        print(json.dumps(bad), flush=True)
        ok &= bad["failed"] == 0
    finally:
        stop_server(proc)
    proc = start_server(args, args.port + 1, ["--max-batch", "1", "--max-queue", "1"])
    try:
        q = asyncio.run(queue_full(args.port + 1, args))
        print(json.dumps(q), flush=True)
        ok &= q["ok"]
    finally:
        stop_server(proc)
    summary = {"summary": "serve_load", "ok": bool(ok),
               "aggregate_tokens_per_second": many["tokens_per_second"],
               "one_client_tokens_per_second": one["tokens_per_second"],
               "speedup": round(many["tokens_per_second"] / one["tokens_per_second"], 2),
               "ttft_p50_s": many["ttft_p50_s"], "ttft_p99_s": many["ttft_p99_s"],
               "malformed_kinds": bad["kinds"]}
    print(json.dumps(summary), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
