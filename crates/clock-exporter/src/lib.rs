//! clock-exporter's probes: how good time is on this host, from the kernel's clock discipline
//! (adjtimex), chronyd (cmdmon), direct NTP queries and PTP hardware clocks.
//!
//! One module per source (`kernel`, `chrony`, `ntp`, `ptp`) reads it and is a core `Probe`
//! that writes its readings; `samples` holds what they share; `summary` adds, at scrape time,
//! the clock reading and the cross-source summaries. Everything works without the runtime so
//! it can be tested against a real chronyd.

pub mod chrony;
pub mod kernel;
pub mod ntp;
pub mod ptp;
pub mod samples;
pub mod settings;
pub mod summary;

/// Adds the clock probes to a tier: `exporter_core::run(clock_exporter::register(Tier::new(..)))`.
pub fn register(tier: exporter_core::Tier) -> exporter_core::Tier {
    tier.probe::<kernel::KernelProbe>()
        .probe::<chrony::ChronyProbe>()
        .probe::<ntp::NtpProbe>()
        .probe::<ptp::PtpProbe>()
        .on_scrape(|_, metrics| {
            let summary = summary::Summary::bind(metrics)?;
            Ok(move || summary.write())
        })
}

#[cfg(test)]
mod tests;
