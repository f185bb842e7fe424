//! clock-exporter's probes: how good time is on this host, from the kernel's clock discipline
//! (adjtimex), chronyd (cmdmon), direct NTP queries and PTP hardware clocks.
//!
//! The binary wires [`spawn_clock_probes`] into the shared exporter runtime; everything here
//! works without it so it can be tested against a real chronyd.

pub mod chrony;
pub mod ntp;
pub mod probes;
pub mod ptp;
pub mod settings;
pub mod timex;

pub use probes::{spawn_clock_probes, ClockProbes, Kind, ProbeConfig, Sample, TargetStatus};
pub mod wiring;

pub use wiring::register;
