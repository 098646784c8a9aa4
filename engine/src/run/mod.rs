//! Running a graph: planning, keys, the scheduler, devices and reports.

mod devices;
mod execute;
mod inputs;
mod keys;
mod plan;
mod records;
mod watched;
mod report;

pub use devices::{default_cpu_slots, Devices, Lane};
pub use execute::{execute, Execution};
pub use keys::KeyParts;
pub use plan::{make_plan, targets, Decision, ModelResolver, NoModels, NodePlan, Plan, PlanOptions, ResolverRef};
pub use records::{records_path, Records};
pub use watched::watched_paths;
pub use report::{NodeReport, RunReport};
