//! clock-exporter's probes: how good time is on this host, from the kernel's clock discipline
//! (adjtimex), chronyd (cmdmon), direct NTP queries and PTP hardware clocks.
//!
//! One module per source (`kernel`, `chrony`, `ntp`, `ptp`) reads it and turns its reading
//! into samples; `probes` refreshes them in the background and adds the cross-source
//! summaries; `wiring` plugs them into the shared exporter runtime with [`register`].
//! Everything works without the runtime so it can be tested against a real chronyd.

pub mod chrony;
pub mod kernel;
pub mod ntp;
pub mod probes;
pub mod ptp;
pub mod samples;
pub mod settings;
pub mod wiring;

pub use probes::{ClockMetrics, ClockProbes, ProbeConfig, TargetStatus};
pub use samples::{Handle, Sample};
pub use wiring::register;
