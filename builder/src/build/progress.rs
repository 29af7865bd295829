//! Build progress on stderr. `plain`: every line, prefixed with its step number, like
//! BuildKit's plain output. `json`: one event per line for tools. (`tty`, BuildKit's
//! collapsing view, prints as `plain` for now.)

use std::cell::RefCell;
use std::io::Write;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ProgressMode {
    #[default]
    Auto,
    Tty,
    Plain,
    Json,
}

struct Step {
    started: Instant,
    /// Output not yet ended by a newline.
    partial: Vec<u8>,
}

pub struct Progress {
    json: bool,
    start: Instant,
    steps: RefCell<Vec<Step>>,
}

/// Progress id for output that belongs to no step (it is dropped).
pub const SILENT: usize = usize::MAX;

impl Progress {
    pub fn new(mode: ProgressMode) -> Self {
        Progress {
            json: mode == ProgressMode::Json,
            start: Instant::now(),
            steps: RefCell::new(Vec::new()),
        }
    }

    fn emit(&self, line: String) {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    fn event(&self, id: usize, kind: &str, text: &str) {
        let t = self.start.elapsed().as_secs_f64();
        self.emit(
            serde_json::json!({"step": id + 1, "event": kind, "text": text, "time": t}).to_string(),
        );
    }

    /// Announces a step; `label` is like `nginx 2/5`, `title` the instruction.
    pub fn start(&self, label: &str, title: &str) -> usize {
        let mut steps = self.steps.borrow_mut();
        steps.push(Step {
            started: Instant::now(),
            partial: Vec::new(),
        });
        let id = steps.len() - 1;
        drop(steps);
        if self.json {
            self.event(id, "start", &format!("[{label}] {title}"));
        } else {
            self.emit(format!("#{} [{label}] {title}", id + 1));
        }
        id
    }

    /// A step's command output, printed line by line with the time since the step started.
    pub fn log(&self, id: usize, bytes: &[u8]) {
        if id == SILENT {
            return;
        }
        let mut lines = Vec::new();
        let elapsed;
        {
            let mut steps = self.steps.borrow_mut();
            let step = &mut steps[id];
            elapsed = step.started.elapsed().as_secs_f64();
            step.partial.extend_from_slice(bytes);
            while let Some(nl) = step.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = step.partial.drain(..=nl).collect();
                lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
        }
        for line in lines {
            if self.json {
                self.event(id, "log", &line);
            } else {
                self.emit(format!("#{} {elapsed:.3} {line}", id + 1));
            }
        }
    }

    fn finish(&self, id: usize, word: &str) {
        let rest = {
            let mut steps = self.steps.borrow_mut();
            std::mem::take(&mut steps[id].partial)
        };
        if !rest.is_empty() {
            self.log(id, b"\n");
        }
        let secs = self.steps.borrow()[id].started.elapsed().as_secs_f64();
        if self.json {
            self.event(id, word, &format!("{secs:.3}"));
        } else if word == "CACHED" {
            self.emit(format!("#{} CACHED", id + 1));
        } else {
            self.emit(format!("#{} {word} {secs:.1}s", id + 1));
        }
    }

    pub fn done(&self, id: usize) {
        self.finish(id, "DONE");
    }

    pub fn fail(&self, id: usize) {
        self.finish(id, "ERROR");
    }

    pub fn cached(&self, id: usize) {
        self.finish(id, "CACHED");
    }

    /// A note about a step (e.g. why it was not cached).
    pub fn note(&self, id: usize, text: &str) {
        if self.json {
            self.event(id, "note", text);
        } else {
            self.emit(format!("#{} {text}", id + 1));
        }
    }
}
