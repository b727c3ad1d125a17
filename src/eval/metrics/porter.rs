//! Porter stemmer, ported from nltk's `PorterStemmer` in its default `NLTK_EXTENSIONS`
//! mode (nltk 3.10.4, `nltk/stem/porter.py`), which is what rouge_score's
//! `DefaultTokenizer(use_stemmer=True)` constructs. That mode differs from Martin Porter's
//! published algorithm: a pool of irregular forms (`sky`, `dying`, `news` ...), `ies`/`ied`
//! on four-letter words keep `ie`, step 1c only turns `y` into `i` after a consonant, step 2
//! runs `alli` first (and again on its result), uses `bli` (not `abli`), adds `fulli` and a
//! `logi` rule that measures the stem with its `l`, and `*o` also holds for a two-letter
//! vowel-consonant stem. Every rule below keeps the order and the quirks of nltk's code
//! (e.g. the first rule whose suffix matches ends the step even when its condition fails).
//!
//! Words are handled as Unicode scalar values (Python indexes code points) and lowered with
//! `str::to_lowercase`, which is Python's `str.lower()` up to Unicode-version differences
//! (Python 3.11 ships Unicode 14). rouge_score only ever passes `[a-z0-9]+` tokens longer
//! than three characters.

/// nltk's irregular forms: the word maps straight to its stem, before any rule.
const IRREGULAR: &[(&str, &str)] = &[
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

type Word = Vec<char>;

/// The stem of `word`, as `nltk.stem.porter.PorterStemmer().stem(word)`.
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some((_, s)) = IRREGULAR.iter().find(|(w, _)| *w == lower) {
        return s.to_string();
    }
    // nltk tests the length of the word as given, not of its lower-cased form.
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: Word = lower.chars().collect();
    for step in [step1a, step1b, step1c, step2, step3, step4, step5a, step5b] {
        w = step(w);
    }
    w.into_iter().collect()
}

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

/// Porter's consonant: not a vowel, and a `y` only when it starts the word or follows a vowel.
fn is_consonant(w: &[char], mut i: usize) -> bool {
    if is_vowel(w[i]) {
        return false;
    }
    if w[i] != 'y' {
        return true;
    }
    // Walk back over a run of y's, as nltk does (each `y` flips the answer).
    let mut negate = false;
    while i > 0 && w[i] == 'y' {
        negate = !negate;
        i -= 1;
    }
    is_vowel(w[i]) == negate
}

/// Consonant flags in one pass: a `y` is a consonant iff it is first or follows a vowel.
fn consonant_flags(w: &[char]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let f = if is_vowel(c) {
            false
        } else if c == 'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(f);
    }
    flags
}

/// m in `[C](VC){m}[V]`: the number of vowel-to-consonant transitions.
fn measure(w: &[char]) -> usize {
    let f = consonant_flags(w);
    f.windows(2).filter(|p| !p[0] && p[1]).count()
}

fn contains_vowel(w: &[char]) -> bool {
    consonant_flags(w).iter().any(|&c| !c)
}

/// `*d`: ends with a double consonant.
fn ends_double_consonant(w: &[char]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

/// `*o`: ends consonant-vowel-consonant, the last not w, x or y; nltk also accepts a whole
/// two-letter word vowel-consonant.
fn ends_cvc(w: &[char]) -> bool {
    let n = w.len();
    (n >= 3 && is_consonant(w, n - 3) && !is_consonant(w, n - 2) && is_consonant(w, n - 1) && !matches!(w[n - 1], 'w' | 'x' | 'y')) || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn ends_with(w: &[char], suffix: &str) -> bool {
    let s: Word = suffix.chars().collect();
    w.len() >= s.len() && w[w.len() - s.len()..] == s[..]
}

fn without(w: &[char], suffix: &str) -> Word {
    w[..w.len() - suffix.chars().count()].to_vec()
}

fn join(stem: &[char], tail: &str) -> Word {
    stem.iter().copied().chain(tail.chars()).collect()
}

type Cond<'a> = &'a dyn Fn(&[char]) -> bool;

/// One suffix rule: (suffix, replacement, condition on the stem). The suffix `*d` means
/// "ends in a double consonant" (the stem then loses both letters).
type Rule<'a> = (&'a str, &'a str, Option<Cond<'a>>);

/// nltk's `_apply_rule_list`: the first rule whose suffix matches decides; if its
/// condition fails the word is returned unchanged. Note that a `*d` rule that finds no
/// double consonant falls through to a literal `endswith("*d")` test, as in nltk.
fn apply_rules(w: Word, rules: &[Rule]) -> Word {
    for &(suffix, repl, cond) in rules {
        let ok = |stem: &[char]| cond.is_none_or(|c| c(stem));
        if suffix == "*d" && ends_double_consonant(&w) {
            let stem = &w[..w.len() - 2];
            return if ok(stem) { join(stem, repl) } else { w };
        }
        if ends_with(&w, suffix) {
            let stem = without(&w, suffix);
            return if ok(&stem) { join(&stem, repl) } else { w };
        }
    }
    w
}

fn m_gt0(s: &[char]) -> bool {
    measure(s) > 0
}

fn m_gt1(s: &[char]) -> bool {
    measure(s) > 1
}

/// sses -> ss, ies -> i, ss -> ss, s -> ; nltk: a four-letter `..ies` keeps `ie` (dies -> die).
fn step1a(w: Word) -> Word {
    if ends_with(&w, "ies") && w.len() == 4 {
        return join(&without(&w, "ies"), "ie");
    }
    apply_rules(w, &[("sses", "ss", None), ("ies", "i", None), ("ss", "ss", None), ("s", "", None)])
}

/// (m>0) eed -> ee; (*v*) ed, ing -> (then at/bl/iz + e, undouble, or +e after a short cvc).
/// nltk: `ied` -> `ie` on four letters (died), else `i` (spied).
fn step1b(w: Word) -> Word {
    if ends_with(&w, "ied") {
        let tail = if w.len() == 4 { "ie" } else { "i" };
        return join(&without(&w, "ied"), tail);
    }
    if ends_with(&w, "eed") {
        let stem = without(&w, "eed");
        return if measure(&stem) > 0 { join(&stem, "ee") } else { w };
    }
    let Some(stem) = ["ed", "ing"].iter().filter(|s| ends_with(&w, s)).map(|s| without(&w, s)).find(|s| contains_vowel(s)) else {
        return w;
    };
    let last: String = stem.last().into_iter().collect();
    let undouble = |_: &[char]| !matches!(last.as_str(), "l" | "s" | "z");
    let add_e = |s: &[char]| measure(s) == 1 && ends_cvc(s);
    apply_rules(stem.clone(), &[("at", "ate", None), ("bl", "ble", None), ("iz", "ize", None), ("*d", &last, Some(&undouble)), ("", "e", Some(&add_e))])
}

/// y -> i, nltk's way: only after a consonant that is not the whole stem (happy, not enjoy).
fn step1c(w: Word) -> Word {
    let cond = |s: &[char]| s.len() > 1 && is_consonant(s, s.len() - 1);
    apply_rules(w, &[("y", "i", Some(&cond))])
}

fn step2(w: Word) -> Word {
    // nltk: `alli` -> `al` first, and the result goes through step 2 again.
    if ends_with(&w, "alli") && m_gt0(&without(&w, "alli")) {
        return step2(join(&without(&w, "alli"), "al"));
    }
    // `logi` -> `log`, measured on the stem with its `l` (geo-logi, theo-logi).
    let logi_stem = w[..w.len().saturating_sub(3)].to_vec();
    let logi = move |_: &[char]| m_gt0(&logi_stem);
    let rules: [Rule; 22] = [
        ("ational", "ate", Some(&m_gt0)),
        ("tional", "tion", Some(&m_gt0)),
        ("enci", "ence", Some(&m_gt0)),
        ("anci", "ance", Some(&m_gt0)),
        ("izer", "ize", Some(&m_gt0)),
        ("bli", "ble", Some(&m_gt0)),
        ("alli", "al", Some(&m_gt0)),
        ("entli", "ent", Some(&m_gt0)),
        ("eli", "e", Some(&m_gt0)),
        ("ousli", "ous", Some(&m_gt0)),
        ("ization", "ize", Some(&m_gt0)),
        ("ation", "ate", Some(&m_gt0)),
        ("ator", "ate", Some(&m_gt0)),
        ("alism", "al", Some(&m_gt0)),
        ("iveness", "ive", Some(&m_gt0)),
        ("fulness", "ful", Some(&m_gt0)),
        ("ousness", "ous", Some(&m_gt0)),
        ("aliti", "al", Some(&m_gt0)),
        ("iviti", "ive", Some(&m_gt0)),
        ("biliti", "ble", Some(&m_gt0)),
        ("fulli", "ful", Some(&m_gt0)),
        ("logi", "log", Some(&logi)),
    ];
    apply_rules(w, &rules)
}

fn step3(w: Word) -> Word {
    apply_rules(
        w,
        &[
            ("icate", "ic", Some(&m_gt0)),
            ("ative", "", Some(&m_gt0)),
            ("alize", "al", Some(&m_gt0)),
            ("iciti", "ic", Some(&m_gt0)),
            ("ical", "ic", Some(&m_gt0)),
            ("ful", "", Some(&m_gt0)),
            ("ness", "", Some(&m_gt0)),
        ],
    )
}

fn step4(w: Word) -> Word {
    let ion = |s: &[char]| measure(s) > 1 && matches!(s.last(), Some('s' | 't'));
    let rules: [Rule; 19] = [
        ("al", "", Some(&m_gt1)),
        ("ance", "", Some(&m_gt1)),
        ("ence", "", Some(&m_gt1)),
        ("er", "", Some(&m_gt1)),
        ("ic", "", Some(&m_gt1)),
        ("able", "", Some(&m_gt1)),
        ("ible", "", Some(&m_gt1)),
        ("ant", "", Some(&m_gt1)),
        ("ement", "", Some(&m_gt1)),
        ("ment", "", Some(&m_gt1)),
        ("ent", "", Some(&m_gt1)),
        ("ion", "", Some(&ion)),
        ("ou", "", Some(&m_gt1)),
        ("ism", "", Some(&m_gt1)),
        ("ate", "", Some(&m_gt1)),
        ("iti", "", Some(&m_gt1)),
        ("ous", "", Some(&m_gt1)),
        ("ive", "", Some(&m_gt1)),
        ("ize", "", Some(&m_gt1)),
    ];
    apply_rules(w, &rules)
}

/// (m>1) e -> ; (m=1 and not *o) e -> . Both conditions are tried (not a rule list).
fn step5a(w: Word) -> Word {
    if ends_with(&w, "e") {
        let stem = without(&w, "e");
        let m = measure(&stem);
        if m > 1 || (m == 1 && !ends_cvc(&stem)) {
            return stem;
        }
    }
    w
}

/// (m>1 and *d and *L) -> single letter; nltk measures the word less its last `l`.
fn step5b(w: Word) -> Word {
    let head = w[..w.len().saturating_sub(1)].to_vec();
    let cond = move |_: &[char]| measure(&head) > 1;
    apply_rules(w, &[("ll", "l", Some(&cond))])
}

#[cfg(test)]
mod tests {
    use super::stem;

    #[test]
    fn paper_and_nltk_examples() {
        for (w, s) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("dies", "die"),
            ("died", "die"),
            ("spied", "spi"),
            ("agreed", "agre"),
            ("feed", "feed"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("hopping", "hop"),
            ("filing", "file"),
            ("happy", "happi"),
            ("enjoy", "enjoy"),
            ("relational", "relat"),
            ("generalization", "gener"),
            ("geology", "geolog"),
            ("controlling", "control"),
            ("skies", "sky"),
            ("dying", "die"),
            ("news", "news"),
            ("Running", "run"),
            ("at", "at"),
            ("yyyy", "yyyi"),
        ] {
            assert_eq!(stem(w), s, "{w}");
        }
    }
}
