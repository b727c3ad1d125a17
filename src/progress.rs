//! Progress for long work: an indicatif bar on a terminal; where stderr is not one (nohup,
//! CI, a log file) a plain line every few seconds (`INSTILL_PROGRESS_SECS`, default 10)
//! with position, rate and ETA, and one at the end, instead of nothing until it ends.
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: ProgressBar,
    plain: Option<Mutex<Plain>>,
}

struct Plain {
    label: String,
    unit: String,
    len: u64,
    pos: u64,
    start_pos: u64,
    msg: String,
    t0: Instant,
    last: Instant,
    every: Duration,
}

impl Plain {
    fn line(&self) -> String {
        let el = self.t0.elapsed().as_secs_f64();
        let done = self.pos.saturating_sub(self.start_pos);
        let rate = if el > 0.0 { done as f64 / el } else { 0.0 };
        let eta = if rate > 0.0 && self.len > self.pos { format!(", ETA {}", hms((self.len - self.pos) as f64 / rate)) } else { String::new() };
        let of = if self.len > 0 { format!("/{} ({:.0}%)", self.len, 100.0 * self.pos as f64 / self.len as f64) } else { String::new() };
        let msg = if self.msg.is_empty() { String::new() } else { format!(" {}", self.msg) };
        format!("{}: {} {}{of}{msg}, {:.2} {}/s, {} elapsed{eta}", self.label, self.unit, self.pos, rate, self.unit, hms(el))
    }
}

fn hms(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

impl Progress {
    /// A bar over `len` items (0: unknown) of `unit` ("step", "example"), with `template`
    /// for the terminal (indicatif's syntax); `label` starts each plain line.
    pub fn new(label: &str, unit: &str, len: u64, template: &str, show: bool) -> Self {
        if !show {
            return Progress { bar: ProgressBar::hidden(), plain: None };
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(len);
            bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
            return Progress { bar, plain: None };
        }
        let every = std::env::var("INSTILL_PROGRESS_SECS").ok().and_then(|s| s.parse::<f64>().ok()).filter(|s| *s > 0.0).unwrap_or(10.0);
        let now = Instant::now();
        let p = Plain { label: label.into(), unit: unit.into(), len, pos: 0, start_pos: 0, msg: String::new(), t0: now, last: now, every: Duration::from_secs_f64(every) };
        Progress { bar: ProgressBar::hidden(), plain: Some(Mutex::new(p)) }
    }

    fn with(&self, f: impl FnOnce(&mut Plain)) {
        if let Some(p) = &self.plain {
            let mut p = p.lock().expect("progress");
            f(&mut p);
            if p.last.elapsed() >= p.every {
                p.last = Instant::now();
                eprintln!("{}", p.line());
            }
        }
    }

    pub fn set_length(&self, n: u64) {
        self.bar.set_length(n);
        if let Some(p) = &self.plain {
            p.lock().expect("progress").len = n;
        }
    }

    /// Where a resumed piece of work starts (rates count from here).
    pub fn start_at(&self, pos: u64) {
        self.bar.set_position(pos);
        self.bar.reset_eta();
        if let Some(p) = &self.plain {
            let mut p = p.lock().expect("progress");
            p.pos = pos;
            p.start_pos = pos;
        }
    }

    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
        self.with(|p| p.pos = pos);
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.with(|p| p.pos += n);
    }

    pub fn set_message(&self, msg: String) {
        self.with(|p| p.msg = msg.clone());
        self.bar.set_message(msg);
    }

    pub fn finish(&self) {
        self.bar.finish();
        if let Some(p) = &self.plain {
            eprintln!("{}", p.lock().expect("progress").line());
        }
    }

    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
        if let Some(p) = &self.plain {
            eprintln!("{}", p.lock().expect("progress").line());
        }
    }
}
