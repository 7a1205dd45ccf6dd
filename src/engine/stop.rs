//! Stop strings matched across token boundaries, never leaked into the output.
//!
//! Text arrives in pieces (one per token, each a whole number of UTF-8 characters). The matcher
//! releases text only once it cannot be the start of a stop string; the held-back tail is
//! released at the end of generation or dropped when a stop string completes.

/// Matches stop strings over a stream of text pieces.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

/// What one piece of text produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopStep {
    /// Text safe to send now.
    pub text: String,
    /// A stop string completed: generation ends and nothing after `text` is sent.
    pub stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Feeds one piece of text.
    pub fn push(&mut self, piece: &str) -> StopStep {
        self.pending.push_str(piece);
        if self.stops.is_empty() {
            return StopStep {
                text: std::mem::take(&mut self.pending),
                stopped: false,
            };
        }
        // Earliest complete stop string.
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let text = self.pending[..at].to_string();
            self.pending.clear();
            return StopStep {
                text,
                stopped: true,
            };
        }
        // Hold back the longest tail that is a proper prefix of some stop string.
        let hold = self.held_tail_len();
        let cut = self.pending.len() - hold;
        let text = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopStep {
            text,
            stopped: false,
        }
    }

    /// Releases the held-back text at the end of generation.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    fn held_tail_len(&self) -> usize {
        let p = &self.pending;
        let mut best = 0;
        for (start, _) in p.char_indices() {
            let tail = &p[start..];
            if self.stops.iter().any(|s| s.starts_with(tail)) {
                best = p.len() - start;
                break;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let s = m.push(p);
            out.push_str(&s.text);
            if s.stopped {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stop_across_pieces_is_not_leaked() {
        assert_eq!(
            run(&["END"], &["hello E", "N", "D more"]),
            ("hello ".into(), true)
        );
        assert_eq!(run(&["a b"], &["x a", " ", "b"]), ("x ".into(), true));
    }

    #[test]
    fn held_text_is_released_when_not_a_stop() {
        let stops = vec!["END".to_string()];
        let mut m = StopMatcher::new(&stops);
        let s = m.push("hi EN");
        assert_eq!(s.text, "hi ");
        let s = m.push("x");
        assert_eq!(s.text, "ENx");
        assert_eq!(run(&["END"], &["abc E"]), ("abc E".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run(&["zz", "b"], &["a", "bzz"]), ("a".into(), true));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&[""], &["a"]), ("a".into(), false));
    }

    #[test]
    fn multibyte_stops_and_text() {
        assert_eq!(run(&["é!"], &["caf", "é", "!x"]), ("caf".into(), true));
        assert_eq!(run(&["éa"], &["ééb"]), ("ééb".into(), false));
    }
}
