//! The training loop and what it needs: loss, optimiser, schedules, checkpoints.
pub mod checkpoint;
pub mod data;
pub mod logps;
pub mod loss;
pub mod loss_sliced;
pub mod metrics;
pub mod objective;
pub mod optim;
pub mod recipe;
pub mod reference;
pub mod schedule;
pub mod step;
pub mod trainer;
