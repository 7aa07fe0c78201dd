//! What happens to a run's output when the run is cut short (decision 080).
//!
//! - **SIGINT / SIGTERM** (Ctrl-C, `kill`): the `ctrlc` crate runs [`install`]'s handler on a
//!   thread of its own, so it may do ordinary work: it removes this process's temporary
//!   outputs (`.NAME.tmp-PID`, see [`crate::output`]), puts back an output that was being
//!   replaced, says so on stderr and exits with 130.
//! - **SIGBUS**: reading a memory-mapped input that another program truncated faults. The
//!   handler names the file (the faulting address is looked up among crunch's maps,
//!   `crunch_formats::mapped`), removes the temporary output, and exits with status 1 instead
//!   of dying silently. It runs on the faulting thread, in signal context: it only *tries* the
//!   locks it needs (a busy registry skips the cleanup, which the next run to the same output
//!   then does, see [`crate::output::remove_stale_temps`]). The fault happens in a plain
//!   memory copy out of the map, never inside the allocator, so the handler's own small
//!   allocations cannot deadlock on the faulting thread.
//! - **SIGKILL** cannot be caught: the next run to the same output removes what it left.

use crate::output::remove_own_temps;
use std::sync::Once;

/// Installs the handlers, once per process (the CLI calls it first thing).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            let removed = remove_own_temps(true);
            let what = if removed.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
                format!("; removed the unfinished output {}", names.join(", "))
            };
            eprintln!("\ninterrupted{what}");
            std::process::exit(130);
        });
        install_sigbus();
    });
}

#[cfg(unix)]
fn install_sigbus() {
    // SAFETY: installs a handler with SA_SIGINFO on SIGBUS; `on_sigbus` has the signature
    // sigaction expects and never returns.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

#[cfg(not(unix))]
fn install_sigbus() {}

#[cfg(unix)]
extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for a SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let file = crunch_formats::mapped::file_at(addr)
        .map(|p| format!("`{}`", p.display()))
        .unwrap_or_else(|| {
            let all = crunch_formats::mapped::mapped_files();
            if all.is_empty() {
                "an input file".to_string()
            } else {
                let names: Vec<String> = all.iter().map(|p| p.display().to_string()).collect();
                format!("an input file (one of {})", names.join(", "))
            }
        });
    let removed = remove_own_temps(false);
    let cleanup = if removed.is_empty() {
        String::new()
    } else {
        " The unfinished output was removed.".to_string()
    };
    let msg = format!(
        "error: {file} shrank while crunch was reading it (truncated or rewritten by another \
         program; the read hit the missing end, SIGBUS). Nothing was written.{cleanup}\n"
    );
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(1);
    }
}
