//! Supervised fine-tuning: next-token cross-entropy on the trained tokens, averaged over
//! every target token of the step (as transformers does with `num_items_in_batch`).
use super::{Ctx, Data, Objective, Out, Stats};
use crate::data::pack::Rows;
use crate::train::data::Set;
use crate::train::loss::loss_sum;
use crate::Result;

pub struct Sft;

impl Objective for Sft {
    fn name(&self) -> &'static str {
        "sft"
    }
    fn data(&self) -> Data {
        Data::Conversations
    }
    fn weight(&self, _: &Set, rows: &Rows) -> usize {
        rows.targets.iter().flatten().filter(|&&t| t).count()
    }
    fn loss(&self, ctx: &Ctx, rows: &Rows) -> Result<Out> {
        let (loss, _) = loss_sum(ctx.model, rows)?;
        Ok(Out { loss, stats: Stats::default() })
    }
}
