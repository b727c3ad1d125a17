//! The training loop and what it needs: loss, optimiser, schedules, checkpoints.
pub mod loss;
pub mod optim;
pub mod step;
pub mod checkpoint;
pub mod data;
pub mod metrics;
pub mod recipe;
pub mod schedule;
pub mod trainer;
