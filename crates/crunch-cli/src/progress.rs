//! Progress bars on stderr (hidden automatically when stderr is not a terminal), and the
//! interrupt check every progress update makes.
//!
//! `CRUNCH_PROGRESS=lines` writes the bars as plain lines instead, each with the seconds since
//! the first bar, whatever stderr is: for the log of a long run on a machine without a
//! terminal, where hidden bars would leave no trace of which stage a slow job is in. A line is
//! written when a bar's message changes and at most every 10 s otherwise.
//!
//! The binary never needs the check: Ctrl-C ends the process (`crunch_export::interrupt`). A
//! program that embeds the commands (the Python package) cannot let Ctrl-C end the process,
//! so it calls [`interrupt`] instead, and the next progress update unwinds the command with
//! an [`Interrupted`] payload (through `resume_unwind`, so no panic message is printed), which
//! the embedder catches at its boundary before removing the unfinished output.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

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
    plain_lines(&pb);
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
    plain_lines(&pb);
    pb.set_message(what.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// Sends `pb` to [`Lines`] when `CRUNCH_PROGRESS=lines`.
fn plain_lines(pb: &ProgressBar) {
    if std::env::var("CRUNCH_PROGRESS").is_ok_and(|v| v == "lines") {
        pb.set_draw_target(ProgressDrawTarget::term_like_with_hz(
            Box::new(Lines::default()),
            1,
        ));
    }
}

/// A "terminal" that turns each redraw of a bar into one line on stderr (see the module
/// comment): the text before the bar's `[` is its message; an unchanged message is written
/// again only after [`Lines::EVERY`].
#[derive(Debug, Default)]
struct Lines {
    state: Mutex<LinesState>,
}

#[derive(Debug, Default)]
struct LinesState {
    buf: String,
    last: Option<(Instant, String)>,
}

impl Lines {
    const EVERY: Duration = Duration::from_secs(10);

    fn since_start() -> f64 {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_secs_f64()
    }

    /// The lines of `text` worth writing now, updating `last`.
    fn due(st: &mut LinesState, text: &str, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        // A spinner's glyph (braille patterns) changes on every tick: not part of the message.
        let plain = |l: &str| -> String {
            l.chars()
                .filter(|c| !('\u{2800}'..='\u{28ff}').contains(c))
                .collect::<String>()
                .trim()
                .to_string()
        };
        for line in text.lines().map(plain).filter(|l| !l.is_empty()) {
            let line = line.as_str();
            let key = line.split('[').next().unwrap_or(line).trim().to_string();
            let write = match &st.last {
                Some((t, k)) => *k != key || now.duration_since(*t) >= Self::EVERY,
                None => true,
            };
            if write {
                st.last = Some((now, key));
                out.push(line.to_string());
            }
        }
        out
    }
}

impl TermLike for Lines {
    fn width(&self) -> u16 {
        120
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.buf.push_str(s);
        st.buf.push('\n');
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.buf.push_str(s);
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let text = std::mem::take(&mut st.buf);
        for line in Self::due(&mut st, &text, Instant::now()) {
            eprintln!("[{:8.1} s] {line}", Self::since_start());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_write_a_changed_message_at_once_and_a_repeated_one_every_10_s() {
        let mut st = LinesState::default();
        let t0 = Instant::now();
        let bar = |pos: u32| format!("making variants [=====>   ] {pos}/10 00:00:0{pos}");
        assert_eq!(Lines::due(&mut st, &bar(1), t0).len(), 1);
        assert!(Lines::due(&mut st, &bar(2), t0 + Duration::from_secs(3)).is_empty());
        assert_eq!(
            Lines::due(&mut st, &bar(3), t0 + Duration::from_secs(11)).len(),
            1
        );
        let other = "searching [>    ] 0/50";
        assert_eq!(
            Lines::due(&mut st, other, t0 + Duration::from_secs(12)),
            vec![other.to_string()]
        );
        assert!(Lines::due(&mut st, "  \n", t0 + Duration::from_secs(30)).is_empty());
        let t1 = t0 + Duration::from_secs(40);
        assert_eq!(
            Lines::due(&mut st, "\u{2801} loading model", t1),
            vec!["loading model"]
        );
        assert!(Lines::due(&mut st, "\u{2809} loading model", t1).is_empty());
    }
}
