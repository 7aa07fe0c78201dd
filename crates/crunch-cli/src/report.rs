//! Where a command's `--json` object goes: printed on stdout (the binary), or handed back to
//! the caller of [`crate::run_captured`] (the Python package), on the thread that ran it.

use std::cell::RefCell;

thread_local! {
    static CAPTURED: RefCell<Option<Vec<serde_json::Value>>> = const { RefCell::new(None) };
}

/// Prints `v` as one line of JSON, or records it when [`capture`] is active on this thread.
pub fn json(v: serde_json::Value) {
    let v = CAPTURED.with(|c| match c.borrow_mut().as_mut() {
        Some(records) => {
            records.push(v);
            None
        }
        None => Some(v),
    });
    if let Some(v) = v {
        println!("{v}");
    }
}

/// Runs `f` with every [`json`] record of this thread collected instead of printed.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<serde_json::Value>) {
    struct Restore(Option<Vec<serde_json::Value>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            CAPTURED.with(|c| *c.borrow_mut() = outer);
        }
    }
    let outer = CAPTURED.with(|c| c.borrow_mut().replace(Vec::new()));
    let restore = Restore(outer);
    let out = f();
    let records = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    drop(restore);
    (out, records)
}
