//! The ground floor: the job model every layer shares (ids, states, specs, records,
//! events) and the compact serde forms its stored records use. It imports nothing of
//! Spindle's; store, exec, jobs, engine and api all build on it.

mod compact;
pub mod job;
