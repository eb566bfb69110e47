//! Progress on stderr: an indicatif bar on a terminal (with a line per measurement above it),
//! plain lines otherwise (CI logs).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("[{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
        {
            bar.set_style(style);
        }
        Progress { bar }
    }

    /// Shows what runs next.
    pub fn start(&self, what: &str) {
        self.bar.set_message(what.to_string());
    }

    /// One measurement done: its line, and the bar advances.
    pub fn done(&self, line: &str) {
        self.note(line);
        self.bar.inc(1);
    }

    /// A line on stderr (above the bar when there is one).
    pub fn note(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
