//! The output buffer of an in-memory restore.
//!
//! A fresh buffer costs more to fill than the decoding into it: the kernel maps and zeroes
//! every 4 KiB page on its first write, about 1.3 µs each on the reference VM (15 ms for a
//! 45 MB file, against 23 ms to decode it). Two things cut that, measured on the BF16 MiniLM
//! file (BENCHMARKS.md, issue 3):
//! - transparent huge pages, asked for with `madvise` (the kernel's common default leaves
//!   them to the program): one fault per 2 MiB, 45 MB faulted in 2-5 ms;
//! - faulting the pages in before decoding, spread over the workers, rather than in the middle
//!   of decoding, where each 2 MiB clear also evicts the decoder's tables and planes from L2.
//!
//! `vec![0; n]` is `calloc`, which for buffers this large maps fresh zero pages rather than
//! writing zeros, so the zero initialisation itself costs nothing beyond the faults.

use crate::workers::Workers;

/// Below this a buffer is not worth the system call and the extra pass.
const PREPARE_MIN: usize = 4 << 20;
const HUGE: usize = 2 << 20;
const PAGE: usize = 4 << 10;

/// A zeroed buffer of `n` bytes, its pages already mapped (huge pages where possible).
pub fn output_buffer(n: usize, pool: &Workers) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // The variable turns both measures off, to measure what they buy.
    if n < PREPARE_MIN || std::env::var_os("CRUNCH_PACK_PLAIN_ALLOC").is_some() {
        return buf;
    }
    advise_huge(&buf);
    let pieces: Vec<&mut [u8]> = buf.chunks_mut(HUGE).collect();
    let touched = pool.try_for_each(pieces, |piece| {
        for page in piece.chunks_mut(PAGE) {
            // Volatile: the compiler knows the buffer is zero and could drop a plain store
            // of zero, and with it the page fault that is the point.
            // SAFETY: `page` is a valid, non-empty, exclusively borrowed slice.
            unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 0) };
        }
        Ok(())
    });
    debug_assert!(touched.is_ok());
    buf
}

#[cfg(target_os = "linux")]
fn advise_huge(buf: &[u8]) {
    // Only whole 2 MiB-aligned regions inside the buffer can become huge pages.
    let start = (buf.as_ptr() as usize).next_multiple_of(HUGE);
    let end = (buf.as_ptr() as usize + buf.len()) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside `buf`'s allocation; MADV_HUGEPAGE only changes how
        // the kernel backs the pages, never their contents, and its failure (e.g. huge pages
        // disabled) is harmless, so the result is ignored.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_: &[u8]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_at_every_size() {
        let pool = Workers::new(2).unwrap();
        for n in [
            0,
            1,
            4095,
            PREPARE_MIN - 1,
            PREPARE_MIN,
            PREPARE_MIN + 12_345,
        ] {
            let b = output_buffer(n, &pool);
            assert_eq!(b.len(), n);
            assert!(b.iter().all(|&x| x == 0));
        }
    }
}
