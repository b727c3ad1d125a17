//! GSM8K answer checking as EleutherAI lm-evaluation-harness's `gsm8k` task (v3.0,
//! `lm_eval/tasks/gsm8k/gsm8k.yaml`) does it.
//!
//! Two filters pull the answer out of the model's text (`RegexFilter`, `findall`):
//! - "strict-match": `#### (\-?[0-9\.\,]+)`, the FIRST match (`group_select: 0`);
//! - "flexible-extract": `(-?[$0-9.,]{2,})|(-?[0-9]+)`, the LAST match (`group_select: -1`),
//!   the first non-empty group of it.
//!
//! No match gives the fallback `"[invalid]"`. The metric (`exact_match` with
//! `regexes_to_ignore: [",", "\$", "(?s).*#### ", "\.$"]`, `ignore_case: true`) then
//! rewrites both the extracted answer and the full reference answer (the dataset's
//! `answer`, reasoning and `#### N`) the same way and compares them.
//!
//! The patterns are tiny and fixed, so they are hand-written scanners rather than a regex
//! engine. Every character they match is ASCII, so scanning bytes is safe on UTF-8.

/// What the harness's `RegexFilter` returns when nothing matches.
pub const FALLBACK: &str = "[invalid]";

fn is_num(b: u8) -> bool {
    b.is_ascii_digit() || b == b'.' || b == b','
}

fn is_num_or_dollar(b: u8) -> bool {
    is_num(b) || b == b'$'
}

/// Length of the run of bytes from `at` that satisfy `f`.
fn run(t: &[u8], at: usize, f: fn(u8) -> bool) -> usize {
    t[at.min(t.len())..].iter().take_while(|&&b| f(b)).count()
}

/// "strict-match": the number after the first `#### ` that is followed by `-?[0-9.,]+`.
pub fn strict(text: &str) -> Option<String> {
    let t = text.as_bytes();
    (0..t.len()).find_map(|i| {
        if !t[i..].starts_with(b"#### ") {
            return None;
        }
        let start = i + 5;
        let sign = usize::from(t.get(start) == Some(&b'-'));
        let n = run(t, start + sign, is_num);
        (n > 0).then(|| text[start..start + sign + n].to_string())
    })
}

/// One `(-?[$0-9.,]{2,})|(-?[0-9]+)` match starting exactly at `p`: its end, if any.
/// Alternatives are tried in order; the optional `-` is greedy but backs off.
fn flexible_at(t: &[u8], p: usize) -> Option<usize> {
    let sign = usize::from(t[p] == b'-');
    let n = run(t, p + sign, is_num_or_dollar);
    if n >= 2 {
        return Some(p + sign + n);
    }
    // Without the sign, `-` cannot start either class, so only the signed forms remain.
    let d = run(t, p + sign, |b| b.is_ascii_digit());
    (d >= 1).then_some(p + sign + d)
}

/// "flexible-extract": the last number-like run in the text (findall's scan: leftmost
/// match, resume after it).
pub fn flexible(text: &str) -> Option<String> {
    let t = text.as_bytes();
    let (mut p, mut last) = (0, None);
    while p < t.len() {
        match flexible_at(t, p) {
            Some(end) => {
                last = Some((p, end));
                p = end;
            }
            None => p += 1,
        }
    }
    last.map(|(s, e)| text[s..e].to_string())
}

/// The metric's rewriting, in the harness's order: drop every `,`, every `$`, everything up
/// to and including the last `#### ` (`(?s).*#### `, greedy), a `.` at the end (Python's
/// `\.$` also matches a `.` just before a final `\n`), then lower-case. Each `re.sub`
/// result is stored in a NumPy unicode array, which drops trailing NUL characters; that is
/// kept too.
pub fn normalize_number(s: &str) -> String {
    let trim_nul = |s: String| s.trim_end_matches('\0').to_string();
    let s = trim_nul(s.replace(',', ""));
    let s = trim_nul(s.replace('$', ""));
    let s = trim_nul(match s.rfind("#### ") {
        Some(i) => s[i + 5..].to_string(),
        None => s,
    });
    let s = if let Some(head) = s.strip_suffix(".\n") { format!("{head}\n") } else { s.strip_suffix('.').map(str::to_string).unwrap_or(s) };
    trim_nul(s).to_lowercase()
}

fn matches(extracted: Option<String>, reference_text: &str) -> bool {
    let pred = extracted.unwrap_or_else(|| FALLBACK.to_string());
    normalize_number(&pred) == normalize_number(reference_text)
}

/// Whether the "strict-match" answer of `pred_text` equals the reference's `#### N`
/// (harness exact_match = 1). `reference_text` is the dataset's whole `answer` field.
pub fn correct(pred_text: &str, reference_text: &str) -> bool {
    matches(strict(pred_text), reference_text)
}

/// The same with the "flexible-extract" answer.
pub fn correct_flexible(pred_text: &str, reference_text: &str) -> bool {
    matches(flexible(pred_text), reference_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraction() {
        assert_eq!(strict("so 3 + 4 = 7\n#### 7").as_deref(), Some("7"));
        assert_eq!(strict("#### -1,234.5 and #### 9").as_deref(), Some("-1,234.5"));
        assert_eq!(strict("#### $5"), None);
        assert_eq!(flexible("The answer is $1,234.").as_deref(), Some("$1,234."));
        assert_eq!(flexible("from 3 to -5").as_deref(), Some("-5"));
        assert_eq!(flexible("no number"), None);
        assert_eq!(normalize_number("$1,234."), "1234");
        assert!(correct("... #### 1,234", "He has 1234 apples.\n#### 1234"));
        assert!(correct_flexible("The answer is $1,234.", "#### 1234"));
        assert!(!correct("The answer is 1234.", "#### 1234"));
    }
}
