//! `stop` sequences over a token stream: text is released only once it can no longer be the
//! start of a stop string, so a stop string split across tokens is still found and never leaks
//! to the client; the text is cut right before it.

/// Most stop strings a request may give (OpenAI's limit).
pub const MAX_STOP: usize = 4;

/// Incremental matcher of stop strings.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are not allowed by the caller's validation).
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops,
            held: String::new(),
            stopped: false,
        }
    }

    /// Whether a stop string was found (later pushes return nothing).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Adds generated text; returns the text that is safe to send now.
    pub fn push(&mut self, piece: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(piece);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            let out = self.held[..at].to_string();
            self.held.clear();
            return out;
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .map(|s| longest_tail_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        out
    }

    /// At the end of generation: the text still held back (none after a stop).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Length in bytes of the longest suffix of `text` that is a proper prefix of `stop`, on a
/// character boundary of both.
fn longest_tail_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&k| {
            text.is_char_boundary(text.len() - k)
                && stop.is_char_boundary(k)
                && text[text.len() - k..] == stop[..k]
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            out.push_str(&m.push(p));
        }
        out.push_str(&m.finish());
        (out, m.stopped())
    }

    #[test]
    fn a_stop_split_across_pieces_cuts_the_text() {
        assert_eq!(
            run(&["\n\n"], &["Paris", ".\n", "\nThe", " end"]),
            ("Paris.".into(), true)
        );
        assert_eq!(run(&["END"], &["aE", "N", "Dzz"]), ("a".into(), true));
    }

    #[test]
    fn a_partial_match_that_fails_is_released() {
        assert_eq!(run(&["END"], &["E", "N", "x", "!"]), ("ENx!".into(), false));
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("abE"), "ab");
        assert_eq!(m.push("Nd"), "ENd");
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_multibyte_text_is_safe() {
        assert_eq!(run(&["b", "ab"], &["xxab"]), ("xx".into(), true));
        assert_eq!(run(&["é!"], &["caf", "é", "?"]), ("café?".into(), false));
        assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), true));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }
}
