//! Hand-written scanners for the byte-level BPE pre-tokenizer patterns.
//!
//! Hugging Face `tokenizers` runs these patterns through Oniguruma (they use a lookahead
//! that Rust's `regex` lacks); a scanner over chars gives the same pieces several times
//! faster. Each function pushes the byte ranges of the pieces of `s`, offset by `base`.
//! Character classes follow Oniguruma's Unicode definitions: `\s` is White_Space,
//! `\p{N}` is Nd|Nl|No, `\p{L}` is Lu|Ll|Lt|Lm|Lo.
use super::Span;
use unicode_general_category::{get_general_category as category, GeneralCategory as G};

/// Which split pattern a tokenizer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// GPT-2's pattern; `digits` first isolates every numeric char (SmolLM2).
    Gpt2 { digits: bool },
    /// Qwen2's pattern (`\p{N}`), or Llama 3's (`\p{N}{1,3}`) when `max_digits` is 3.
    Qwen2 { max_digits: usize },
}

#[inline]
fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    matches!(category(c), G::UppercaseLetter | G::LowercaseLetter | G::TitlecaseLetter | G::ModifierLetter | G::OtherLetter)
}

#[inline]
fn is_number(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    c.is_numeric()
}

/// Neither whitespace, letter nor number: `[^\s\p{L}\p{N}]`.
#[inline]
fn is_other(c: char) -> bool {
    !c.is_whitespace() && !is_letter(c) && !is_number(c)
}

/// Chars of `s` with their byte positions, and a sentinel-free peek.
struct Chars<'a> {
    s: &'a str,
}

impl Chars<'_> {
    #[inline]
    fn at(&self, i: usize) -> Option<char> {
        self.s[i..].chars().next()
    }
    /// End of the run of chars from `i` that satisfy `f`.
    #[inline]
    fn run(&self, mut i: usize, f: impl Fn(char) -> bool) -> usize {
        while let Some(c) = self.at(i) {
            if !f(c) {
                break;
            }
            i += c.len_utf8();
        }
        i
    }
    /// Start of the last char before `end`.
    #[inline]
    fn last_start(&self, end: usize) -> usize {
        let mut j = end - 1;
        while !self.s.is_char_boundary(j) {
            j -= 1;
        }
        j
    }
}

pub fn split(p: Pattern, s: &str, base: usize, out: &mut Vec<Span>) {
    match p {
        Pattern::Gpt2 { digits: false } => gpt2(s, base, out),
        Pattern::Gpt2 { digits: true } => {
            // Digits(individual_digits) runs first: each numeric char is its own piece.
            let mut start = 0;
            for (i, c) in s.char_indices() {
                if c.is_numeric() {
                    if start < i {
                        gpt2(&s[start..i], base + start, out);
                    }
                    out.push((base + i, base + i + c.len_utf8()));
                    start = i + c.len_utf8();
                }
            }
            if start < s.len() {
                gpt2(&s[start..], base + start, out);
            }
        }
        Pattern::Qwen2 { max_digits } => qwen2(s, base, max_digits, out),
    }
}

/// `'s|'t|'re|'ve|'m|'ll|'d` at `i` (after the quote); its length in bytes, quote included.
fn contraction(cs: &Chars, i: usize, ignore_case: bool) -> Option<usize> {
    let rest = &cs.s.as_bytes()[i + 1..];
    let lower = |k: usize| rest.get(k).map(|b| if ignore_case { b.to_ascii_lowercase() } else { *b });
    match (lower(0), lower(1)) {
        (Some(b's' | b't' | b'm' | b'd'), _) => Some(2),
        (Some(b'r'), Some(b'e')) | (Some(b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => Some(3),
        _ => None,
    }
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
fn gpt2(s: &str, base: usize, out: &mut Vec<Span>) {
    let cs = Chars { s };
    let mut i = 0;
    while let Some(c) = cs.at(i) {
        let end = gpt2_piece(&cs, i, c);
        out.push((base + i, base + end));
        i = end;
    }
}

fn gpt2_piece(cs: &Chars, i: usize, c: char) -> usize {
    if c == '\'' {
        if let Some(n) = contraction(cs, i, false) {
            return i + n;
        }
    }
    // ` ?` then one class run.
    let (j, d) = if c == ' ' { (i + 1, cs.at(i + 1)) } else { (i, Some(c)) };
    match d {
        Some(d) if is_letter(d) => return cs.run(j, is_letter),
        Some(d) if is_number(d) => return cs.run(j, is_number),
        Some(d) if is_other(d) => return cs.run(j, is_other),
        _ => {}
    }
    whitespace(cs, i)
}

/// `\s+(?!\S)|\s+` at `i`, a whitespace char.
fn whitespace(cs: &Chars, i: usize) -> usize {
    let k = cs.run(i, char::is_whitespace);
    if k == cs.s.len() {
        return k;
    }
    let last = cs.last_start(k);
    // Leave the last whitespace char to prefix the word that follows.
    if last > i {
        last
    } else {
        k
    }
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
fn qwen2(s: &str, base: usize, max_digits: usize, out: &mut Vec<Span>) {
    let cs = Chars { s };
    let mut i = 0;
    while let Some(c) = cs.at(i) {
        let end = qwen2_piece(&cs, i, c, max_digits);
        out.push((base + i, base + end));
        i = end;
    }
}

fn qwen2_piece(cs: &Chars, i: usize, c: char, max_digits: usize) -> usize {
    let newline = |c: char| c == '\r' || c == '\n';
    if c == '\'' {
        if let Some(n) = contraction(cs, i, true) {
            return i + n;
        }
    }
    if is_letter(c) {
        return cs.run(i, is_letter);
    }
    let next = cs.at(i + c.len_utf8());
    if !newline(c) && !is_number(c) && next.is_some_and(is_letter) {
        return cs.run(i + c.len_utf8(), is_letter);
    }
    if is_number(c) {
        let mut j = i;
        for _ in 0..max_digits {
            match cs.at(j) {
                Some(d) if is_number(d) => j += d.len_utf8(),
                _ => break,
            }
        }
        return j;
    }
    let (j, d) = if c == ' ' { (i + 1, next) } else { (i, Some(c)) };
    if d.is_some_and(is_other) {
        let k = cs.run(j, is_other);
        return cs.run(k, newline);
    }
    // c is whitespace here.
    let k = cs.run(i, char::is_whitespace);
    // `\s*[\r\n]+`: through the last line break of the run.
    if let Some(p) = cs.s[i..k].rfind(newline) {
        return i + p + 1;
    }
    whitespace(cs, i)
}
