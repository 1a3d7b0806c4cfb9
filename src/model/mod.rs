//! The ground floor: the job model every layer shares (ids, states, specs, records,
//! events), remote workers' leases and kinds, schedules' specs and records, the compact serde
//! forms its stored records use, text cut to a byte budget, and the field violations
//! requests are refused with. It imports nothing of
//! Spindle's; store, exec, jobs, engine and api all build on it.

mod compact;
pub mod job;
pub mod schedule;
pub mod secret;
pub mod text;
pub mod violation;
pub mod worker;
