//! Progress bars on stderr (hidden automatically when stderr is not a terminal), and the
//! interrupt check every progress update makes.
//!
//! The binary never needs the check: Ctrl-C ends the process (`crunch_export::interrupt`). A
//! program that embeds the commands (the Python package) cannot let Ctrl-C end the process,
//! so it calls [`interrupt`] instead, and the next progress update unwinds the command with
//! an [`Interrupted`] payload (through `resume_unwind`, so no panic message is printed), which
//! the embedder catches at its boundary before removing the unfinished output.

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The unwind payload of an interrupted command.
pub struct Interrupted;

/// Asks every running command of this process to stop at its next progress update.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Clears [`interrupt`]'s request (once the interrupted commands have returned).
pub fn clear_interrupt() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}

/// Unwinds with [`Interrupted`] if [`interrupt`] was called.
pub fn check_interrupt() {
    if INTERRUPTED.load(Ordering::Relaxed) {
        std::panic::resume_unwind(Box::new(Interrupted));
    }
}

/// A progress bar whose every update first checks for an interrupt.
#[derive(Clone)]
pub struct Bar(pub ProgressBar);

impl Bar {
    pub fn inc(&self, n: u64) {
        check_interrupt();
        self.0.inc(n);
    }
    pub fn set_position(&self, pos: u64) {
        check_interrupt();
        self.0.set_position(pos);
    }
    pub fn set_length(&self, len: u64) {
        check_interrupt();
        self.0.set_length(len);
    }
    pub fn set_message(&self, msg: impl Into<std::borrow::Cow<'static, str>>) {
        check_interrupt();
        self.0.set_message(msg);
    }
    pub fn set_style(&self, style: ProgressStyle) {
        self.0.set_style(style);
    }
    pub fn finish_and_clear(&self) {
        self.0.finish_and_clear();
    }
}

/// A bar that calibration and compression advance block by block.
pub struct Bars(pub Bar);

impl crunch_calib::Progress for Bars {
    fn block(&mut self, layer: usize, _layers: usize) {
        self.0.set_position(layer as u64);
    }
    fn step(&mut self, what: &str) {
        self.0.set_message(what.to_string());
    }
}

pub fn bar(len: usize, what: &str) -> Bar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    Bar(pb)
}

pub fn spinner(what: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_message(what.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}
