//! The training loop and what it needs: loss, optimiser, schedules, checkpoints.
pub mod loss;
pub mod optim;
pub mod step;
