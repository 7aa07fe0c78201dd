//! Turning generated token ids into text as they come: each step decodes only a short window
//! of ids (a token's bytes may complete a character only together with the next one), and
//! text that could be the start of a stop string is held back until it is known not to be.

use tokenizers::Tokenizer;

/// What one new token produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Text that is now final (may be empty).
    pub text: String,
    /// A stop string was completed: generation ends; the stop string is not in the text.
    pub stopped: bool,
}

pub struct TextStream<'t> {
    tokenizer: &'t Tokenizer,
    ids: Vec<u32>,
    /// Decoding restarts at `prefix`; `read..` are ids whose text is not yet final.
    prefix: usize,
    read: usize,
    text: String,
    emitted: usize,
    stop: Vec<String>,
    done: bool,
}

impl<'t> TextStream<'t> {
    pub fn new(tokenizer: &'t Tokenizer, stop: Vec<String>) -> Self {
        TextStream {
            tokenizer,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
            text: String::new(),
            emitted: 0,
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            done: false,
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| format!("decoding tokens: {e}"))
    }

    /// Adds one generated token.
    pub fn push(&mut self, id: u32) -> Result<Step, String> {
        if self.done {
            return Ok(Step::default());
        }
        self.ids.push(id);
        let before = self.decode(&self.ids[self.prefix..self.read])?;
        let after = self.decode(&self.ids[self.prefix..])?;
        // A trailing U+FFFD means the last token ended inside a character: wait for more.
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') && after.starts_with(&before)
        {
            self.text.push_str(&after[before.len()..]);
            self.prefix = self.read;
            self.read = self.ids.len();
        } else if !after.starts_with(&before) {
            // The window decodes differently with the new token (rare with byte-level
            // tokenizers): take the whole window's text as the new ending.
            let keep = self.text.len() - before.len().min(self.text.len());
            if keep >= self.emitted && !after.ends_with('\u{FFFD}') {
                self.text.truncate(keep);
                self.text.push_str(&after);
                self.prefix = self.read;
                self.read = self.ids.len();
            }
        }
        Ok(self.release())
    }

    /// Everything not yet given out (at the end of generation).
    pub fn finish(&mut self) -> String {
        if self.done {
            return String::new();
        }
        self.done = true;
        let rest = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        rest
    }

    /// The whole text so far (without any stop string).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn release(&mut self) -> Step {
        let longest = self.stop.iter().map(String::len).max().unwrap_or(0);
        // A stop string can only end in the new text, so search from just before it.
        let mut from = self.emitted.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = self
            .stop
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|p| from + p))
            .min();
        if let Some(at) = hit {
            self.text.truncate(at);
            let out = self.text[self.emitted.min(at)..].to_string();
            self.emitted = self.text.len();
            self.done = true;
            return Step {
                text: out,
                stopped: true,
            };
        }
        // Hold back the longest ending that starts some stop string.
        let mut safe = self.text.len();
        for s in &self.stop {
            for (cut, _) in s.char_indices().skip(1) {
                if self.text.ends_with(&s[..cut]) {
                    safe = safe.min(self.text.len() - cut);
                }
            }
        }
        let safe = safe.max(self.emitted);
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        Step {
            text: out,
            stopped: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::wordlevel::WordLevel;

    /// A word-level tokenizer over a few pieces, no spaces added.
    fn tokenizer() -> Tokenizer {
        let vocab = [
            ("a", 0),
            ("b", 1),
            ("ST", 2),
            ("OP", 3),
            ("x", 4),
            ("<unk>", 5),
        ]
        .into_iter()
        .map(|(s, i)| (s.to_string(), i))
        .collect();
        let model = WordLevel::builder()
            .vocab(vocab)
            .unk_token("<unk>".into())
            .build()
            .unwrap();
        Tokenizer::new(model)
    }

    fn run(ids: &[u32], stop: &[&str]) -> (String, bool, String) {
        let tok = tokenizer();
        let mut s = TextStream::new(&tok, stop.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        let mut stopped = false;
        for &id in ids {
            let step = s.push(id).unwrap();
            out.push_str(&step.text);
            if step.stopped {
                stopped = true;
                break;
            }
        }
        out.push_str(&s.finish());
        (out, stopped, s.text().to_string())
    }

    #[test]
    fn stop_strings_end_the_text_and_are_not_shown() {
        // WordLevel's default decoder joins with spaces: "a b ST OP x".
        let (out, stopped, all) = run(&[0, 1, 2, 3, 4], &["ST OP"]);
        assert!(stopped);
        assert_eq!(out, "a b ");
        assert_eq!(all, "a b ");
        // A partial match is held back, then released at the end.
        let (out, stopped, _) = run(&[0, 1, 2], &["ST OP"]);
        assert!(!stopped);
        assert_eq!(out, "a b ST");
        let (out, stopped, _) = run(&[0, 1, 4], &[]);
        assert!(!stopped);
        assert_eq!(out, "a b x");
    }
}
