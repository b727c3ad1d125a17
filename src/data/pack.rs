//! Batching rendered examples: padded rows grouped by length, or several examples
//! packed into one row with positions restarting and attention kept inside each
//! example (segments), so packing changes no example's loss.
use super::render::Rendered;
use crate::model::Batch;

/// One row of a training batch: the model input plus which tokens are targets.
#[derive(Debug, Clone)]
pub struct Rows {
    pub batch: Batch,
    /// Per row and token: is this token a training target?
    pub targets: Vec<Vec<bool>>,
    /// Per row: which examples it holds (indices into the input).
    pub examples: Vec<Vec<usize>>,
}

/// First-fit-decreasing packing of examples into rows of at most `max_len` tokens.
/// Rows are right-padded with `pad` to the longest row.
pub fn pack(examples: &[Rendered], max_len: usize, pad: u32) -> Rows {
    let mut order: Vec<usize> = (0..examples.len()).filter(|&i| examples[i].ids.len() <= max_len).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(examples[i].ids.len()));
    let mut bins: Vec<(usize, Vec<usize>)> = vec![];
    for i in order {
        let n = examples[i].ids.len();
        match bins.iter_mut().find(|(used, _)| used + n <= max_len) {
            Some(bin) => {
                bin.0 += n;
                bin.1.push(i);
            }
            None => bins.push((n, vec![i])),
        }
    }
    rows(examples, bins.into_iter().map(|(_, b)| b).collect(), pad)
}

/// One example per row, rows sorted by length so each batch pads little.
pub fn padded(examples: &[Rendered], pad: u32) -> Rows {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].ids.len());
    rows(examples, order.into_iter().map(|i| vec![i]).collect(), pad)
}

fn rows(examples: &[Rendered], groups: Vec<Vec<usize>>, pad: u32) -> Rows {
    rows_from(groups, pad, |i| (&examples[i].ids, &examples[i].mask))
}

/// Rows from groups of sequences: `seq(i)` gives sequence `i`'s ids and loss mask; each
/// group becomes one row (its sequences packed), right-padded with `pad`.
pub fn rows_from<'a>(groups: Vec<Vec<usize>>, pad: u32, seq: impl Fn(usize) -> (&'a [u32], &'a [bool])) -> Rows {
    let width = groups.iter().map(|g| g.iter().map(|&i| seq(i).0.len()).sum::<usize>()).max().unwrap_or(0);
    let mut out = Rows { batch: Batch { tokens: vec![], positions: vec![], segments: vec![], valid: vec![] }, targets: vec![], examples: vec![] };
    for g in groups {
        let (mut toks, mut pos, mut seg, mut valid, mut tgt) = (vec![], vec![], vec![], vec![], vec![]);
        for (s, &i) in g.iter().enumerate() {
            let (ids, mask) = seq(i);
            toks.extend_from_slice(ids);
            pos.extend(0..ids.len() as u32);
            seg.extend(std::iter::repeat_n(s as u32, ids.len()));
            valid.extend(std::iter::repeat_n(true, ids.len()));
            // A segment's first token has nothing before it in its own example to predict it from.
            tgt.extend(mask.iter().enumerate().map(|(j, &m)| m && j > 0));
        }
        let fill = width - toks.len();
        toks.extend(std::iter::repeat_n(pad, fill));
        pos.extend(std::iter::repeat_n(0, fill));
        seg.extend(std::iter::repeat_n(u32::MAX, fill));
        valid.extend(std::iter::repeat_n(false, fill));
        tgt.extend(std::iter::repeat_n(false, fill));
        out.batch.tokens.push(toks);
        out.batch.positions.push(pos);
        out.batch.segments.push(seg);
        out.batch.valid.push(valid);
        out.targets.push(tgt);
        out.examples.push(g);
    }
    out
}
