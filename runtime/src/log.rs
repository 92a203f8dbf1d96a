//! Log lines that a client or a failing listener could make by the thousand (handler and
//! listener failures, slow consumers, rate limits): each place logs at most a few lines a
//! second, and the next line it writes says how many it left out.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines one place may write per second.
const LINES_PER_SECOND: u32 = 10;

/// The bound of one place's log lines (a field of the part of the app that logs them: two
/// apps share none).
#[derive(Debug)]
pub(crate) struct LogLimit {
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Option<Instant>,
    written: u32,
    skipped: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit {
            state: Mutex::new(Window {
                start: None,
                written: 0,
                skipped: 0,
            }),
        }
    }
}

impl LogLimit {
    /// Whether a line may be written now: `Some(n)` with the number of lines left out since
    /// the last one written (log it as a field), `None` to leave this one out.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut window = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if window
            .start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
        {
            window.start = Some(now);
            window.written = 0;
        }
        if window.written < LINES_PER_SECOND {
            window.written += 1;
            Some(std::mem::take(&mut window.skipped))
        } else {
            window.skipped += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_limit_and_the_rest_counted() {
        let limit = LogLimit::default();
        let written: Vec<u64> = (0..100).filter_map(|_| limit.allow()).collect();
        assert_eq!(written, vec![0; LINES_PER_SECOND as usize]);
        // A new window: the next line says how many were left out.
        limit.state.lock().unwrap().start = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(limit.allow(), Some(100 - u64::from(LINES_PER_SECOND)));
        assert_eq!(limit.allow(), Some(0));
    }
}
