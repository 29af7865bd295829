//! Build progress on stderr, three ways. `tty` (the default on a terminal), like BuildKit's:
//! one line per finished step with its time, and the running step with its last output
//! lines, redrawn in place. `plain`: every line, prefixed with its step number. `json`: one
//! event per line for tools.
//!
//! Several builds (the services of `rbuild bake`) share one `Progress`: each step carries its
//! service, in its label (`[nginx 2/6]`) and in json events, and the tty view shows the running
//! steps of all of them.

use std::io::Write;
use std::sync::Mutex;
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
    title: String,
    service: Option<String>,
    /// Shown after the running step's title (e.g. that it waits for another build).
    status: Option<&'static str>,
    started: Instant,
    /// Output not yet ended by a newline.
    partial: Vec<u8>,
    /// Last lines of output, for the tty view.
    tail: std::collections::VecDeque<String>,
    finished: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Tty,
    Plain,
    Json,
}

pub struct Progress {
    style: Style,
    start: Instant,
    steps: Mutex<Vec<Step>>,
    /// Lines of the live (redrawn) region on the terminal.
    drawn: Mutex<usize>,
    last_draw: Mutex<Instant>,
}

/// Output lines the tty view shows under a running step.
const TTY_TAIL: usize = 6;

/// Progress id for output that belongs to no step (it is dropped).
pub const SILENT: usize = usize::MAX;

impl Progress {
    pub fn new(mode: ProgressMode) -> Self {
        use std::io::IsTerminal;
        let style = match mode {
            ProgressMode::Json => Style::Json,
            ProgressMode::Plain => Style::Plain,
            ProgressMode::Tty => Style::Tty,
            ProgressMode::Auto if std::io::stderr().is_terminal() => Style::Tty,
            ProgressMode::Auto => Style::Plain,
        };
        Progress {
            style,
            start: Instant::now(),
            steps: Mutex::new(Vec::new()),
            drawn: Mutex::new(0),
            last_draw: Mutex::new(Instant::now()),
        }
    }

    fn emit(&self, line: String) {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    /// Redraws the live region: every unfinished step with its last output lines.
    fn redraw(&self, force: bool) {
        if self.style != Style::Tty {
            return;
        }
        if !force
            && self
                .last_draw
                .lock()
                .expect("progress lock")
                .elapsed()
                .as_millis()
                < 80
        {
            return;
        }
        *self.last_draw.lock().expect("progress lock") = Instant::now();
        let width = terminal_width();
        let lines = live_lines(&self.steps.lock().expect("progress lock"), width);
        let mut err = std::io::stderr().lock();
        let mut drawn = self.drawn.lock().expect("progress lock");
        // Up to the start of the live region, clear to the end of the screen, draw.
        if *drawn > 0 {
            let _ = write!(err, "\x1b[{}F", *drawn);
        }
        let _ = write!(err, "\x1b[J");
        for line in &lines {
            let _ = writeln!(err, "{line}");
        }
        *drawn = lines.len();
    }

    /// Prints a line above the live region (it scrolls away with the terminal).
    fn settle(&self, line: String) {
        if self.style == Style::Tty {
            let mut drawn = self.drawn.lock().expect("progress lock");
            if *drawn > 0 {
                let _ = write!(std::io::stderr().lock(), "\x1b[{}F\x1b[J", *drawn);
                *drawn = 0;
            }
        }
        self.emit(line);
    }

    fn event(&self, id: usize, kind: &str, text: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let mut event = serde_json::json!({"step": id + 1, "event": kind, "text": text, "time": t});
        if let Some(service) = &self.steps.lock().expect("progress lock")[id].service {
            event["service"] = service.as_str().into();
        }
        self.emit(event.to_string());
    }

    /// Announces a step of `service`'s build (bake) or of the only build (`None`); `label` is
    /// like `nginx 2/5` (the service first, if any), `title` the instruction.
    pub fn start(&self, service: Option<&str>, label: &str, title: &str) -> usize {
        let mut steps = self.steps.lock().expect("progress lock");
        steps.push(Step {
            title: format!("[{label}] {title}"),
            service: service.map(str::to_string),
            status: None,
            started: Instant::now(),
            partial: Vec::new(),
            tail: Default::default(),
            finished: false,
        });
        let id = steps.len() - 1;
        drop(steps);
        match self.style {
            Style::Json => self.event(id, "start", &format!("[{label}] {title}")),
            Style::Plain => self.emit(format!("#{} [{label}] {title}", id + 1)),
            Style::Tty => self.redraw(true),
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
            let mut steps = self.steps.lock().expect("progress lock");
            let step = &mut steps[id];
            elapsed = step.started.elapsed().as_secs_f64();
            step.partial.extend_from_slice(bytes);
            while let Some(nl) = step.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = step.partial.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                step.tail.push_back(line.clone());
                if step.tail.len() > TTY_TAIL {
                    step.tail.pop_front();
                }
                lines.push(line);
            }
        }
        match self.style {
            Style::Json => lines.iter().for_each(|l| self.event(id, "log", l)),
            Style::Plain => lines
                .iter()
                .for_each(|l| self.emit(format!("#{} {elapsed:.3} {l}", id + 1))),
            Style::Tty => self.redraw(false),
        }
    }

    fn finish(&self, id: usize, word: &str) {
        self.finish_from(id, word, None)
    }

    /// `from`: where a cached result came from, when not the local cache.
    fn finish_from(&self, id: usize, word: &str, from: Option<&str>) {
        let rest = {
            let mut steps = self.steps.lock().expect("progress lock");
            std::mem::take(&mut steps[id].partial)
        };
        if !rest.is_empty() {
            self.log(id, b"\n");
        }
        let (secs, title, tail) = {
            let mut steps = self.steps.lock().expect("progress lock");
            let step = &mut steps[id];
            step.finished = true;
            (
                step.started.elapsed().as_secs_f64(),
                step.title.clone(),
                step.tail.clone(),
            )
        };
        let from = from.map(|f| format!(" (from {f})")).unwrap_or_default();
        match self.style {
            Style::Json if !from.is_empty() => {
                self.event(id, "note", from.trim());
                self.event(id, word, &format!("{secs:.3}"));
            }
            Style::Json => self.event(id, word, &format!("{secs:.3}")),
            Style::Plain if word == "CACHED" => self.emit(format!("#{} CACHED{from}", id + 1)),
            Style::Plain => self.emit(format!("#{} {word} {secs:.1}s", id + 1)),
            Style::Tty => {
                let state = match word {
                    "CACHED" => format!("CACHED{from}"),
                    _ => format!("{secs:.1}s"),
                };
                let mark = if word == "ERROR" { "ERROR" } else { "=>" };
                self.settle(format!("{mark} {title} {state}"));
                if word == "ERROR" {
                    tail.iter().for_each(|l| self.emit(format!("   {l}")));
                }
                self.redraw(true);
            }
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

    /// The step waits for the same step (same cache key) that another build is running.
    pub fn waiting(&self, id: usize) {
        const TEXT: &str = "waiting for the same step in another build";
        self.steps.lock().expect("progress lock")[id].status = Some(TEXT);
        match self.style {
            Style::Tty => self.redraw(true),
            _ => self.note(id, TEXT),
        }
    }

    /// A step found in an imported cache (`--cache-from`), named `from`.
    pub fn cached_from(&self, id: usize, from: &str) {
        self.finish_from(id, "CACHED", Some(from));
    }

    /// A note about a step (e.g. why it was not cached).
    pub fn note(&self, id: usize, text: &str) {
        match self.style {
            Style::Json => self.event(id, "note", text),
            Style::Plain => self.emit(format!("#{} {text}", id + 1)),
            Style::Tty => self.settle(format!("   {text}")),
        }
    }
}

fn terminal_width() -> usize {
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills a winsize; on failure it is left zeroed.
    let ok = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        size.ws_col as usize
    } else {
        100
    }
}

/// The live region: each running step, then its last lines, cut to the terminal's width.
fn live_lines(steps: &[Step], width: usize) -> Vec<String> {
    let cut = |s: &str, columns: usize| -> String { s.chars().take(columns).collect() };
    let mut out = Vec::new();
    for step in steps.iter().filter(|s| !s.finished) {
        let mut header = format!(
            "=> {} {:.1}s",
            step.title,
            step.started.elapsed().as_secs_f64()
        );
        if let Some(status) = step.status {
            header = format!("{header} ({status})");
        }
        out.push(cut(&header, width.saturating_sub(1)));
        for line in &step.tail {
            // Cut before styling: escape codes take no columns.
            out.push(format!(
                "\x1b[2m > {}\x1b[0m",
                cut(line, width.saturating_sub(4))
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_region_shows_running_steps_with_their_tail() {
        let step = |title: &str, finished: bool, tail: &[&str]| Step {
            title: title.to_string(),
            service: None,
            status: None,
            started: Instant::now(),
            partial: Vec::new(),
            tail: tail.iter().map(|s| s.to_string()).collect(),
            finished,
        };
        let steps = vec![
            step("[1/3] FROM x", true, &[]),
            step("[2/3] RUN apt-get update", false, &["Get:1 a", "Get:2 b"]),
        ];
        let lines = live_lines(&steps, 20);
        assert_eq!(lines.len(), 3, "finished steps are not redrawn");
        assert!(lines[0].starts_with("=> [2/3] RUN apt-g"));
        assert!(
            lines.iter().all(|l| l.chars().count() <= 19),
            "cut to the terminal width"
        );
        assert!(lines[1].contains("Get:1"));
    }
}
