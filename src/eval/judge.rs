//! LLM-as-judge with MT-bench's judge prompts (Zheng et al. 2023, FastChat's
//! `judge_prompts.jsonl`: `single-v1`, `pair-v2`, and their reference-answer variants).
//! Single-answer grading rates each answer 1-10 (`[[rating]]`); pairwise comparison asks
//! for `[[A]]`, `[[B]]` or `[[C]]` (tie) in both orders, and a verdict counts only when it
//! holds under the swap (otherwise it is a tie), as FastChat's position-bias check does.
//! A verdict that cannot be parsed is counted and shown, never dropped silently.
//! Judgments go through the resumable runner, so a killed run continues; a report
//! directory holds one judge run (its settings are checked on resume).
use crate::decode::jobs::{Job, Record, Runner};
use crate::decode::GenerateOptions;
use crate::model::CausalLm;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const SINGLE_SYSTEM: &str = "You are a helpful assistant.";
const SINGLE: &str = "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI assistant to the user question displayed below. Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin your evaluation by providing a short explanation. Be as objective as possible. After providing your explanation, you must rate the response on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for example: \"Rating: [[5]]\".\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]";
const SINGLE_REF: &str = "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI assistant to the user question displayed below. Your evaluation should consider correctness and helpfulness. You will be given a reference answer and the assistant's answer. Begin your evaluation by comparing the assistant's answer with the reference answer. Identify and correct any mistakes. Be as objective as possible. After providing your explanation, you must rate the response on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for example: \"Rating: [[5]]\".\n\n[Question]\n{question}\n\n[The Start of Reference Answer]\n{ref_answer_1}\n[The End of Reference Answer]\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]";
const PAIR_SYSTEM: &str = "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the user question displayed below. You should choose the assistant that follows the user's instructions and answers the user's question better. Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by comparing the two responses and provide a short explanation. Avoid any positional biases and ensure that the order in which the responses were presented does not influence your decision. Do not allow the length of the responses to influence your evaluation. Do not favor certain names of the assistants. Be as objective as possible. After providing your explanation, output your final verdict by strictly following this format: \"[[A]]\" if assistant A is better, \"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie.";
const PAIR: &str = "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]";

/// A question to judge answers to (the first turn of a multi-turn one).
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub id: String,
    pub category: String,
    pub text: String,
    /// A reference answer, where the file has one.
    pub reference: Option<String>,
}

/// Questions from JSONL: MT-bench's (`question_id`, `category`, `turns`), Self-Instruct's
/// user-oriented set (`id`, `instruction`, `instances[0].input/output`), or the generic
/// suite's (`id`, `prompt`, `reference(s)`).
pub fn read_questions(path: &Path) -> Result<Vec<Question>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |m: &str| Error::file(path, format!("line {}: {m}", i + 1));
        let v: Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let id = v.get("question_id").map(|q| q.to_string().trim_matches('"').to_string()).or_else(|| s("id")).unwrap_or_else(|| format!("line-{}", i + 1));
        let first = v.get("instances").and_then(|x| x.get(0));
        let (text, reference) = if let Some(t) = v.get("turns").and_then(|t| t.get(0)).and_then(Value::as_str) {
            (t.to_string(), v.get("reference").and_then(|r| r.get(0)).and_then(Value::as_str).map(str::to_string))
        } else if let Some(inst) = s("instruction") {
            let input = first.and_then(|f| f.get("input")).and_then(Value::as_str).unwrap_or("");
            let q = if input.trim().is_empty() { inst } else { format!("{inst}\n\n{input}") };
            (q, first.and_then(|f| f.get("output")).and_then(Value::as_str).map(str::to_string))
        } else if let Some(p) = s("prompt") {
            (p, s("reference").or_else(|| v.get("references").and_then(|r| r.get(0)).and_then(Value::as_str).map(str::to_string)))
        } else {
            return Err(bad("no question: expected \"turns\" (MT-bench), \"instruction\" or \"prompt\""));
        };
        out.push(Question { id, category: s("category").or_else(|| s("motivation_app")).unwrap_or_else(|| "all".into()), text, reference });
    }
    Ok(out)
}

/// Answers by id: an evaluation report directory (its `predictions.jsonl`), or JSONL with
/// `id` and one of `answer`, `prediction`, `output`.
pub fn read_answers(path: &Path) -> Result<HashMap<String, String>> {
    let file = if path.is_dir() { path.join("predictions.jsonl") } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file).map_err(|e| Error::file(&file, e.to_string()))?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| Error::file(&file, format!("line {}: {e}", i + 1)))?;
        let id = v.get("id").map(|q| q.to_string().trim_matches('"').to_string());
        let answer = ["answer", "prediction", "output"].iter().find_map(|k| v.get(*k).and_then(Value::as_str));
        match (id, answer) {
            (Some(id), Some(a)) => out.insert(id, a.to_string()),
            _ => return Err(Error::file(&file, format!("line {}: expected \"id\" and an \"answer\", \"prediction\" or \"output\"", i + 1))),
        };
    }
    Ok(out)
}

/// The rating in a single-answer judgment: `[[x]]`, else `[x]` (FastChat's patterns),
/// within 1-10.
pub fn parse_rating(text: &str) -> Option<f64> {
    for pat in [r"\[\[(\d+\.?\d*)\]\]", r"\[(\d+\.?\d*)\]"] {
        let re = regex::Regex::new(pat).expect("valid regex");
        if let Some(c) = re.captures_iter(text).last() {
            return c[1].parse::<f64>().ok().filter(|r| (1.0..=10.0).contains(r));
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    A,
    B,
    Tie,
}

/// The verdict in a pairwise judgment; None when there is none, or several that disagree.
pub fn parse_verdict(text: &str) -> Option<Verdict> {
    let found: Vec<Verdict> = [("[[A]]", Verdict::A), ("[[B]]", Verdict::B), ("[[C]]", Verdict::Tie)].into_iter().filter(|(m, _)| text.contains(m)).map(|(_, v)| v).collect();
    match found.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

/// The outcome for the answers judged, from the verdict with them as A and the one with
/// them as B (swapped): a win or loss only when both orders agree, else a tie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Win,
    Loss,
    Tie,
    /// The orders disagree (position bias): counted as a tie.
    Inconsistent,
    Unparsed,
}

pub fn combine(as_a: Option<Verdict>, as_b: Option<Verdict>) -> Outcome {
    match (as_a, as_b) {
        (None, _) | (_, None) => Outcome::Unparsed,
        (Some(Verdict::A), Some(Verdict::B)) => Outcome::Win,
        (Some(Verdict::B), Some(Verdict::A)) => Outcome::Loss,
        (Some(Verdict::Tie), Some(Verdict::Tie)) => Outcome::Tie,
        _ => Outcome::Inconsistent,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Judgment {
    id: String,
    text: String,
}

impl Record for Judgment {
    fn id(&self) -> &str {
        &self.id
    }
}

pub struct JudgeOptions {
    /// What is judged, by whom and how: saved in `settings.json` and checked on resume,
    /// so a rerun with another judge or other answers never reuses old judgments.
    pub settings: Value,
    pub template: Option<String>,
    pub batch_size: usize,
    pub max_new_tokens: usize,
    pub progress: bool,
}

/// One judgment prompt: system + user turn with the template's fields filled.
fn prompt(tok: &Tokenizer, opts: &JudgeOptions, system: &str, user: String) -> Result<Vec<u32>> {
    tok.encode_chat(opts.template.as_deref(), &[json!({"role": "system", "content": system}), json!({"role": "user", "content": user})])
}

fn run(model: &CausalLm, tok: &Tokenizer, jobs: &[Job], out: &Path, opts: &JudgeOptions) -> Result<HashMap<String, String>> {
    std::fs::create_dir_all(out).map_err(|e| Error::file(out, e.to_string()))?;
    super::runner::check_settings(out, &opts.settings)?;
    let gen = GenerateOptions { max_new_tokens: opts.max_new_tokens, ..Default::default() };
    let runner = Runner { model, tok, gen, batch_size: opts.batch_size, label: opts.progress.then(|| "judge".to_string()) };
    let got: Vec<Judgment> = runner.run(jobs, &out.join("judgments.jsonl"), |j, g| Ok(Some(Judgment { id: j.id.clone(), text: g.text })))?;
    Ok(got.into_iter().map(|j| (j.id, j.text)).collect())
}

fn answer<'a>(answers: &'a HashMap<String, String>, q: &Question, what: &str) -> Result<&'a str> {
    answers.get(&q.id).map(String::as_str).ok_or_else(|| Error::Input(format!("{what} have no answer for question {:?}", q.id)))
}

/// One line of a judge report.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    pub id: String,
    pub category: String,
    /// Single mode: the rating (None: unparseable).
    pub rating: Option<f64>,
    /// Pairwise mode: the verdicts with the answers as A, then as B, and the outcome.
    pub verdicts: Option<(Option<Verdict>, Option<Verdict>)>,
    pub outcome: Option<Outcome>,
    /// The judgment's text where it could not be parsed.
    pub unparsed: Option<String>,
}

/// Rate every answer 1-10 (the reference-answer prompt where the question has one and
/// `with_reference`).
pub fn single(model: &CausalLm, tok: &Tokenizer, qs: &[Question], answers: &HashMap<String, String>, with_reference: bool, out: &Path, opts: &JudgeOptions) -> Result<Vec<Judged>> {
    let mut jobs = vec![];
    for (i, q) in qs.iter().enumerate() {
        let a = answer(answers, q, "the answers")?;
        let user = match (&q.reference, with_reference) {
            (Some(r), true) => SINGLE_REF.replace("{question}", &q.text).replace("{ref_answer_1}", r).replace("{answer}", a),
            _ => SINGLE.replace("{question}", &q.text).replace("{answer}", a),
        };
        jobs.push(Job { id: q.id.clone(), prompt: prompt(tok, opts, SINGLE_SYSTEM, user)?, stream: i as u64 });
    }
    let texts = run(model, tok, &jobs, out, opts)?;
    Ok(qs
        .iter()
        .map(|q| {
            let t = &texts[&q.id];
            let rating = parse_rating(t);
            Judged { id: q.id.clone(), category: q.category.clone(), rating, verdicts: None, outcome: None, unparsed: rating.is_none().then(|| t.clone()) }
        })
        .collect())
}

/// Rate each conversation's last response (the user turn before it is the question) 1-10,
/// by id: a judge score as a data-selection indicator. None where the verdict does not
/// parse; conversations without a user turn before an assistant one are left out.
pub fn rate_conversations(model: &CausalLm, tok: &Tokenizer, convs: &[(String, &crate::data::Conversation)], out: &Path, opts: &JudgeOptions) -> Result<HashMap<String, Option<f64>>> {
    let mut qs = vec![];
    let mut answers = HashMap::new();
    for (id, c) in convs {
        let last = |role: &str, upto: usize| c.messages[..upto].iter().rposition(|m| m.role == role);
        let Some(ai) = last("assistant", c.messages.len()) else { continue };
        let Some(ui) = last("user", ai) else { continue };
        qs.push(Question { id: id.clone(), category: "all".into(), text: c.messages[ui].content.clone(), reference: None });
        answers.insert(id.clone(), c.messages[ai].content.clone());
    }
    Ok(single(model, tok, &qs, &answers, false, out, opts)?.into_iter().map(|j| (j.id, j.rating)).collect())
}

/// Compare `answers` with `against` on every question, in both orders.
pub fn pairwise(model: &CausalLm, tok: &Tokenizer, qs: &[Question], answers: &HashMap<String, String>, against: &HashMap<String, String>, out: &Path, opts: &JudgeOptions) -> Result<Vec<Judged>> {
    let mut jobs = vec![];
    for (i, q) in qs.iter().enumerate() {
        let (a, b) = (answer(answers, q, "the answers")?, answer(against, q, "the answers compared against")?);
        let fill = |x: &str, y: &str| PAIR.replace("{question}", &q.text).replace("{answer_a}", x).replace("{answer_b}", y);
        jobs.push(Job { id: format!("{}/ab", q.id), prompt: prompt(tok, opts, PAIR_SYSTEM, fill(a, b))?, stream: 2 * i as u64 });
        jobs.push(Job { id: format!("{}/ba", q.id), prompt: prompt(tok, opts, PAIR_SYSTEM, fill(b, a))?, stream: 2 * i as u64 + 1 });
    }
    let texts = run(model, tok, &jobs, out, opts)?;
    Ok(qs
        .iter()
        .map(|q| {
            let (ab, ba) = (&texts[&format!("{}/ab", q.id)], &texts[&format!("{}/ba", q.id)]);
            let v = (parse_verdict(ab), parse_verdict(ba));
            let outcome = combine(v.0, v.1);
            let unparsed = (outcome == Outcome::Unparsed).then(|| format!("{ab}\n---\n{ba}"));
            Judged { id: q.id.clone(), category: q.category.clone(), rating: None, verdicts: Some(v), outcome: Some(outcome), unparsed }
        })
        .collect())
}

/// Totals of a judge run: mean rating (single) or wins/losses/ties and the win rate
/// (wins + half the ties, inconsistent verdicts counting as ties, over parsed ones).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub judged: usize,
    pub unparsed: usize,
    pub mean_rating: Option<f64>,
    pub by_category: BTreeMap<String, f64>,
    pub outcomes: BTreeMap<String, usize>,
    pub win_rate: Option<f64>,
    /// With a reward model: how its preferences agree with the judge's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward: Option<RewardAgreement>,
}

pub fn summarize(js: &[Judged]) -> Summary {
    let unparsed = js.iter().filter(|j| j.unparsed.is_some()).count();
    let ratings: Vec<(&str, f64)> = js.iter().filter_map(|j| j.rating.map(|r| (j.category.as_str(), r))).collect();
    let mean = |xs: &[f64]| (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
    let mut by_category: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (c, r) in &ratings {
        by_category.entry(c.to_string()).or_default().push(*r);
    }
    let mut outcomes = BTreeMap::new();
    for o in js.iter().filter_map(|j| j.outcome) {
        *outcomes.entry(serde_json::to_value(o).expect("serializable").as_str().unwrap_or("?").to_string()).or_insert(0) += 1;
    }
    let n = |k: &str| *outcomes.get(k).unwrap_or(&0) as f64;
    let parsed = n("win") + n("loss") + n("tie") + n("inconsistent");
    Summary {
        judged: js.len(),
        unparsed,
        mean_rating: mean(&ratings.iter().map(|r| r.1).collect::<Vec<_>>()),
        by_category: by_category.into_iter().filter_map(|(c, v)| mean(&v).map(|m| (c, m))).collect(),
        win_rate: (parsed > 0.0).then(|| (n("win") + 0.5 * (n("tie") + n("inconsistent"))) / parsed),
        outcomes,
        reward: None,
    }
}

/// How a reward model's preferences line up with the judge's: pairwise, the share of
/// decided questions (a consistent win or loss) where the reward model scores the same
/// answer higher; single, the Spearman rank correlation of ratings and rewards.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RewardAgreement {
    /// Questions with a reward score (both answers, pairwise).
    pub scored: usize,
    /// Pairwise: questions the judge decided, and the share the reward model agrees on.
    pub decided: Option<usize>,
    pub agreement: Option<f64>,
    /// Pairwise: the share of scored questions where the reward model prefers the answers.
    pub reward_win_rate: Option<f64>,
    /// Single: Spearman's rho between ratings and rewards (ties ranked by their mean).
    pub spearman: Option<f64>,
}

/// Agreement of the judge with reward scores of the answers (`answers`) and, pairwise, of
/// the answers compared against (`against`), by question id.
pub fn reward_agreement(js: &[Judged], answers: &HashMap<String, f64>, against: Option<&HashMap<String, f64>>) -> RewardAgreement {
    let Some(against) = against else {
        let pairs: Vec<(f64, f64)> = js.iter().filter_map(|j| Some((j.rating?, *answers.get(&j.id)?))).collect();
        return RewardAgreement { scored: pairs.len(), decided: None, agreement: None, reward_win_rate: None, spearman: spearman(&pairs) };
    };
    let prefs: Vec<(Option<Outcome>, f64)> = js.iter().filter_map(|j| Some((j.outcome, answers.get(&j.id)? - against.get(&j.id)?))).collect();
    let decided: Vec<bool> = prefs
        .iter()
        .filter_map(|(o, d)| match o {
            Some(Outcome::Win) => Some(*d > 0.0),
            Some(Outcome::Loss) => Some(*d < 0.0),
            _ => None,
        })
        .collect();
    let share = |n: usize, of: usize| (of > 0).then(|| n as f64 / of as f64);
    RewardAgreement {
        scored: prefs.len(),
        decided: Some(decided.len()),
        agreement: share(decided.iter().filter(|&&a| a).count(), decided.len()),
        reward_win_rate: share(prefs.iter().filter(|(_, d)| *d > 0.0).count(), prefs.len()),
        spearman: None,
    }
}

/// Spearman's rho: Pearson's correlation of the ranks (ties get their mean rank).
pub fn spearman(pairs: &[(f64, f64)]) -> Option<f64> {
    let ranks = |xs: Vec<f64>| {
        let mut idx: Vec<usize> = (0..xs.len()).collect();
        idx.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
        let mut r = vec![0f64; xs.len()];
        let mut i = 0;
        while i < idx.len() {
            let j = (i..idx.len()).take_while(|&j| xs[idx[j]] == xs[idx[i]]).last().unwrap_or(i);
            (i..=j).for_each(|k| r[idx[k]] = (i + j) as f64 / 2.0);
            i = j + 1;
        }
        r
    };
    let (a, b) = (ranks(pairs.iter().map(|p| p.0).collect()), ranks(pairs.iter().map(|p| p.1).collect()));
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let (va, vb) = (a.iter().map(|x| (x - ma).powi(2)).sum::<f64>(), b.iter().map(|y| (y - mb).powi(2)).sum::<f64>());
    (pairs.len() >= 2 && va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// `judged.jsonl` (one line per question), `summary.json`, and `report.md` with the
/// totals and every unparseable judgment.
pub fn write_report(out: &Path, js: &[Judged], s: &Summary) -> Result<()> {
    let lines: String = js.iter().map(|j| serde_json::to_string(j).expect("serializable") + "\n").collect();
    super::write_text(&out.join("judged.jsonl"), &lines)?;
    super::write_json(&out.join("summary.json"), s)?;
    let mut md = format!("# Judge report\n\n{} judged, {} unparseable\n\n", s.judged, s.unparsed);
    if let Some(m) = s.mean_rating {
        md.push_str(&format!("Mean rating: **{m:.2}** / 10\n\n| category | mean |\n|---|---|\n"));
        s.by_category.iter().for_each(|(c, m)| md.push_str(&format!("| {c} | {m:.2} |\n")));
    }
    if let Some(w) = s.win_rate {
        md.push_str(&format!("Win rate: **{:.1} %** (wins + half of ties and inconsistent, over parsed)\n\n| outcome | count |\n|---|---|\n", 100.0 * w));
        s.outcomes.iter().for_each(|(o, n)| md.push_str(&format!("| {o} | {n} |\n")));
    }
    if let Some(r) = &s.reward {
        let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.1} %", 100.0 * v));
        match r.spearman {
            Some(rho) => md.push_str(&format!("\nReward model: Spearman rho **{rho:.3}** between ratings and rewards over {} answers\n", r.scored)),
            None if r.decided.is_some() => md.push_str(&format!(
                "\nReward model: agrees with **{}** of the {} decided verdicts; prefers the answers on {} of {} questions\n",
                pct(r.agreement),
                r.decided.unwrap_or(0),
                pct(r.reward_win_rate),
                r.scored
            )),
            None => md.push_str(&format!("\nReward model: no correlation over {} answers (too few, or one side constant)\n", r.scored)),
        }
    }
    for j in js.iter().filter(|j| j.unparsed.is_some()) {
        md.push_str(&format!("\n## Unparseable: {}\n\n```\n{}\n```\n", j.id, j.unparsed.as_deref().unwrap_or("").chars().take(600).collect::<String>()));
    }
    super::write_text(&out.join("report.md"), &md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(id: &str, rating: Option<f64>, outcome: Option<Outcome>) -> Judged {
        Judged { id: id.into(), category: "all".into(), rating, verdicts: None, outcome, unparsed: None }
    }

    #[test]
    fn reward_agreement_counts_decided_questions_only() {
        let js = [
            judged("1", None, Some(Outcome::Win)),
            judged("2", None, Some(Outcome::Loss)),
            judged("3", None, Some(Outcome::Win)),
            judged("4", None, Some(Outcome::Tie)),
            judged("5", None, Some(Outcome::Win)),
        ];
        let a: HashMap<String, f64> = [("1", 2.0), ("2", 0.0), ("3", -1.0), ("4", 5.0)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let b: HashMap<String, f64> = [("1", 1.0), ("2", 1.0), ("3", 0.0), ("4", 0.0), ("5", 0.0)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let r = reward_agreement(&js, &a, Some(&b));
        // Question 5 has no reward for the answers; 4 is a tie: 3 decided, 1 and 2 agree.
        assert_eq!((r.scored, r.decided, r.agreement), (4, Some(3), Some(2.0 / 3.0)));
        assert_eq!(r.reward_win_rate, Some(0.5));
    }

    #[test]
    fn spearman_ranks_with_ties() {
        assert_eq!(spearman(&[(1.0, 10.0), (2.0, 20.0), (3.0, 35.0)]), Some(1.0));
        assert_eq!(spearman(&[(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]), Some(-1.0));
        // scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]) = 0.9486832980505138
        assert!((spearman(&[(1.0, 1.0), (2.0, 3.0), (2.0, 2.0), (3.0, 4.0)]).unwrap() - 0.948_683_298_050_513_8).abs() < 1e-12);
        assert_eq!(spearman(&[(1.0, 1.0), (1.0, 2.0)]), None, "a constant side has no correlation");
        let js = [judged("a", Some(3.0), None), judged("b", Some(8.0), None), judged("c", None, None)];
        let r: HashMap<String, f64> = [("a", -1.0), ("b", 2.0), ("c", 0.0)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(reward_agreement(&js, &r, None).spearman, Some(1.0));
    }

    #[test]
    fn ratings_and_verdicts_parse_as_fastchat_does() {
        assert_eq!(parse_rating("Good answer. Rating: [[7]]"), Some(7.0));
        assert_eq!(parse_rating("Rating: [8.5]"), Some(8.5));
        assert_eq!(parse_rating("[[3]] at first, then on reflection [[6]]"), Some(6.0));
        assert_eq!(parse_rating("Rating: [[11]]"), None, "out of range");
        assert_eq!(parse_rating("I would give it a seven."), None);
        assert_eq!(parse_verdict("A is clearer. [[A]]"), Some(Verdict::A));
        assert_eq!(parse_verdict("[[C]]"), Some(Verdict::Tie));
        assert_eq!(parse_verdict("[[A]] or maybe [[B]]"), None, "disagreeing verdicts");
        assert_eq!(parse_verdict("Assistant A"), None);
    }

    #[test]
    fn a_verdict_counts_only_when_it_survives_the_swap() {
        use Verdict::*;
        assert_eq!(combine(Some(A), Some(B)), Outcome::Win);
        assert_eq!(combine(Some(B), Some(A)), Outcome::Loss);
        assert_eq!(combine(Some(Tie), Some(Tie)), Outcome::Tie);
        assert_eq!(combine(Some(A), Some(A)), Outcome::Inconsistent, "always the first position");
        assert_eq!(combine(Some(A), Some(Tie)), Outcome::Inconsistent);
        assert_eq!(combine(None, Some(B)), Outcome::Unparsed);
        let j = |o| Judged { id: "q".into(), category: "c".into(), rating: None, verdicts: None, outcome: Some(o), unparsed: (o == Outcome::Unparsed).then(String::new) };
        let s = summarize(&[j(Outcome::Win), j(Outcome::Win), j(Outcome::Loss), j(Outcome::Inconsistent), j(Outcome::Unparsed)]);
        assert_eq!((s.judged, s.unparsed), (5, 1));
        assert!((s.win_rate.unwrap() - 2.5 / 4.0).abs() < 1e-12);
    }

    #[test]
    fn questions_read_from_mt_bench_user_oriented_and_generic_files() {
        let dir = std::env::temp_dir().join(format!("instill-judge-q-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("q.jsonl");
        std::fs::write(&p, "{\"question_id\": 81, \"category\": \"writing\", \"turns\": [\"Write.\", \"Again.\"]}\n{\"id\": \"u1\", \"motivation_app\": \"Grammarly\", \"instruction\": \"Fix it.\", \"instances\": [{\"input\": \"teh cat\", \"output\": \"the cat\"}]}\n{\"prompt\": \"Hi?\", \"reference\": \"Hello.\"}\n").unwrap();
        let qs = read_questions(&p).unwrap();
        assert_eq!(qs[0], Question { id: "81".into(), category: "writing".into(), text: "Write.".into(), reference: None });
        assert_eq!(qs[1], Question { id: "u1".into(), category: "Grammarly".into(), text: "Fix it.\n\nteh cat".into(), reference: Some("the cat".into()) });
        assert_eq!((qs[2].id.as_str(), qs[2].reference.as_deref()), ("line-3", Some("Hello.")));
        std::fs::write(&p, "{\"nothing\": 1}\n").unwrap();
        assert!(read_questions(&p).unwrap_err().to_string().contains("line 1"));
    }
}
