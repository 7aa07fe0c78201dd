//! Packed weights copied into anonymous memory backed by 2 MB pages (decision 109).
//!
//! Decoding streams every weight once per token. Read straight from the mapped model file,
//! the weights sit in 4 KB pages of the page cache: a 92 MB Q4_0 model is 22 000 pages, more
//! than the TLB holds, so each page costs a page walk per token, and the hardware prefetchers
//! stop at every 4 KB boundary. Copied at load into chunks of anonymous memory advised
//! `MADV_HUGEPAGE` (the machine's transparent huge pages are usually `madvise`-only), the
//! same bytes take 46 pages of 2 MB.
//!
//! The copy replaces the mapped bytes, never adds to them for long: once every matrix of the
//! file has been copied, nothing refers to the map any more and it is unmapped, so resident
//! memory stays the packed weights (plus at most one partly filled 2 MB page per chunk).
//! Small matrices share chunks (SmolLM2's q projection is 186 KB), so a chunk is a bump
//! allocator: each matrix gets its own disjoint range, handed out as its own owner
//! ([`Slice`]), so no reference ever covers bytes still being written.

use crunch_kernels::{Bytes, PackedMatrix};
use memmap2::MmapMut;
use std::sync::{Arc, Mutex, Weak};

/// Bytes per chunk (a matrix larger than this gets a chunk of its own size).
const CHUNK: usize = 32 << 20;

/// One anonymous mapping, filled front to back.
struct Chunk {
    /// The mapping's start, taken once (the map itself is never dereferenced after).
    ptr: *mut u8,
    len: usize,
    _map: MmapMut,
}

// SAFETY: the mapping lives as long as the chunk; each byte range is written once, before
// the slice that reads it is created, by the thread holding `NEXT`'s lock.
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

/// One matrix's range of a chunk: the only reference to those bytes.
struct Slice {
    chunk: Arc<Chunk>,
    start: usize,
    len: usize,
}

impl std::ops::Deref for Slice {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `start..start + len` lies in the chunk, was written before this slice was
        // made, and is never written again.
        unsafe { std::slice::from_raw_parts(self.chunk.ptr.add(self.start), self.len) }
    }
}

/// The chunk being filled and the first free byte in it. Held weakly: a chunk lives as long
/// as a matrix in it (a dropped model frees its chunks; the next load starts a new one).
static NEXT: Mutex<Option<(Weak<Chunk>, usize)>> = Mutex::new(None);

/// Whether weights are copied (on unless `CRUNCH_HUGE_PAGES=0`, where the kernel has the
/// advice; on other systems the map is used as it is).
pub(super) fn enabled() -> bool {
    cfg!(target_os = "linux") && std::env::var("CRUNCH_HUGE_PAGES").as_deref() != Ok("0")
}

fn new_chunk(len: usize) -> Option<Arc<Chunk>> {
    let mut map = MmapMut::map_anon(len).ok()?;
    #[cfg(target_os = "linux")]
    {
        // Without the advice (an older kernel, THP off) the copy still works, in 4 KB pages.
        let _ = map.advise(memmap2::Advice::HugePage);
    }
    let ptr = map.as_mut_ptr();
    Some(Arc::new(Chunk {
        ptr,
        len,
        _map: map,
    }))
}

/// Drops this process's mapping of `src`'s whole pages when they belong to a mapped input
/// file (`crunch_formats::mapped`): the page cache keeps them, a later read maps them again,
/// and resident memory does not count the weights twice while the rest of the model is
/// copied. Never applied to other memory (anonymous pages would read back as zeros).
fn release(src: &[u8]) {
    #[cfg(target_os = "linux")]
    {
        use crunch_formats::mapped::file_at;
        let (a, b) = (src.as_ptr() as usize, src.as_ptr() as usize + src.len());
        let (Some(first), Some(last)) = (file_at(a), file_at(b - 1)) else {
            return;
        };
        if first != last {
            return;
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let (lo, hi) = (a.div_ceil(page) * page, b / page * page);
        if hi > lo {
            // SAFETY: whole pages of a read-only shared file map (the registry lists live
            // maps only); MADV_DONTNEED on such pages only unmaps them, their contents
            // stay the file's. A failure leaves them mapped, which is only more memory.
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_DONTNEED) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = src;
}

/// `m` with its bytes in a huge-page chunk, or `m` itself when no memory could be mapped.
pub(super) fn place(m: PackedMatrix) -> PackedMatrix {
    let src = m.bytes();
    let len = src.len();
    if len == 0 {
        return m;
    }
    // Ranges start on a cache line (the kernels' 64-byte loads stay within one).
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let current = next
        .as_ref()
        .and_then(|(c, at)| Some((c.upgrade()?, at.div_ceil(64) * 64)))
        .filter(|(c, start)| start + len <= c.len);
    let (chunk, start) = match current {
        Some(c) => c,
        None => match new_chunk(CHUNK.max(len)) {
            Some(c) => (c, 0),
            None => return m,
        },
    };
    // SAFETY: `start..start + len` is inside the chunk and not yet handed out.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), chunk.ptr.add(start), len) };
    *next = Some((Arc::downgrade(&chunk), start + len));
    drop(next);
    release(src);
    let slice = Slice { chunk, start, len };
    let bytes = Bytes::shared(Arc::new(slice), 0, len).expect("the whole slice");
    PackedMatrix::new(m.dtype(), m.rows(), m.cols(), bytes).expect("same sizes as before")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crunch_kernels::DType;

    #[test]
    fn placed_matrices_keep_their_bytes_and_products() {
        let mut made = Vec::new();
        for (i, rows) in [1usize, 3, 70, 5].into_iter().enumerate() {
            let bytes: Vec<u8> = (0..rows * 2 * 34)
                .map(|j| match j % 34 {
                    // A small finite f16 scale, codes anything.
                    0 => 0x00,
                    1 => 0x2c,
                    _ => (j * 31 + i * 7) as u8,
                })
                .collect();
            let m = PackedMatrix::new(DType::Q8_0, rows, 64, Bytes::owned(bytes)).unwrap();
            let placed = place(m.clone());
            assert_eq!(placed.bytes(), m.bytes());
            assert_eq!(placed.bytes().as_ptr() as usize % 64, 0);
            made.push((m, placed));
        }
        // A matrix read from a mapped file: its pages are released from the map after the
        // copy, and both the copy and the map still read the file's bytes.
        let path = std::env::temp_dir().join(format!("crunch-arena-{}.bin", std::process::id()));
        let bytes: Vec<u8> = (0..3 * 8192usize)
            .map(|j| if j % 34 == 1 { 0x2c } else { (j % 251) as u8 })
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = crunch_formats::mapped::MappedFile::open(&path).unwrap();
        let file: Arc<dyn crunch_kernels::ByteOwner> = Arc::new(file);
        let (start, rows) = (100, 300);
        let len = rows * 2 * 34;
        let m = PackedMatrix::new(
            DType::Q8_0,
            rows,
            64,
            Bytes::shared(file.clone(), start, len).unwrap(),
        )
        .unwrap();
        let placed = place(m.clone());
        assert_eq!(placed.bytes(), &bytes[start..start + len]);
        assert_eq!(m.bytes(), &bytes[start..start + len]);
        drop((m, placed, file));
        std::fs::remove_file(&path).unwrap();

        let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
        for (m, placed) in &made {
            let (mut a, mut b) = (vec![0f32; m.rows()], vec![0f32; m.rows()]);
            m.matmul(&x, 1, &mut a);
            placed.matmul(&x, 1, &mut b);
            assert_eq!(a, b);
        }
    }
}
