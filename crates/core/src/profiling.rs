//! On-demand CPU profiles, `GET /debug/pprof/profile?seconds=N`: the exporter samples its own
//! stacks for N seconds and answers with a gzipped pprof protobuf, the format Go's
//! net/http/pprof serves, so Pyroscope, Grafana Alloy and `go tool pprof` read it as is.
//! Off unless `web.enable_profiling` is set; one profile at a time.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

pub const PATH: &str = "/debug/pprof/profile";
pub const DEFAULT_SECONDS: u64 = 30;
pub const MAX_SECONDS: u64 = 120;
/// Not 100: a rate that is not a multiple of common timer periods avoids lock-step sampling.
const FREQUENCY_HZ: i32 = 99;

/// Guards the process-wide profiler: the SIGPROF handler can serve one profile at a time.
#[derive(Default)]
pub struct Profiler {
    busy: AtomicBool,
}

/// Releases the profiler when the blocking profile ends, even if the client went away.
struct ProfileInProgress(Arc<Profiler>);

impl Drop for ProfileInProgress {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

#[derive(Deserialize)]
pub struct Params {
    seconds: Option<String>,
}

/// Parses `seconds`: whole seconds in 1..=MAX_SECONDS, 30 when absent.
pub fn parse_seconds(raw: Option<&str>) -> Result<u64, String> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_SECONDS);
    };
    match raw.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_SECONDS).contains(&n) => Ok(n),
        _ => Err(format!(
            "seconds must be a whole number from 1 to {MAX_SECONDS}, not {raw:?}\n"
        )),
    }
}

pub async fn handler(State(profiler): State<Arc<Profiler>>, Query(p): Query<Params>) -> Response {
    let seconds = match parse_seconds(p.seconds.as_deref()) {
        Ok(s) => s,
        Err(msg) => return (StatusCode::BAD_REQUEST, msg).into_response(),
    };
    if profiler
        .busy
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return (
            StatusCode::CONFLICT,
            [(header::RETRY_AFTER, "5")],
            "a profile is already being taken; retry when it is done\n",
        )
            .into_response();
    }
    let running = ProfileInProgress(profiler);
    tracing::info!(target: "http", event = "profile_started", seconds);
    // The profiler's guard is not Send and symbolizing is CPU work: keep both off the
    // async workers.
    let result = tokio::task::spawn_blocking(move || {
        let _running = running;
        let r = take_profile(Duration::from_secs(seconds));
        release_memory();
        r
    })
    .await
    .unwrap_or_else(|e| Err(format!("profiling task failed: {e}")));
    match result {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"profile.pb.gz\"",
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(target: "http", event = "profile_failed", error = %e);
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
        }
    }
}

/// Gives back what a profile took: the symbol cache that symbolizing filled (the binary's
/// debug info, over 100 MiB) and the heap pages malloc keeps after freeing them.
fn release_memory() {
    backtrace::clear_symbol_cache();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Samples every thread for `duration`; returns the gzipped pprof protobuf.
pub fn take_profile(duration: Duration) -> Result<Vec<u8>, String> {
    use pprof::protos::Message as _;
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY_HZ)
        // Unwinding through these can fault inside the signal handler.
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| format!("cannot start the profiler: {e}"))?;
    std::thread::sleep(duration);
    let profile = guard
        .report()
        .build()
        .and_then(|r| r.pprof())
        .map_err(|e| format!("cannot build the profile: {e}"))?;
    drop(guard);
    let raw = profile.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw)
        .and_then(|()| gz.finish())
        .map_err(|e| format!("cannot compress the profile: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_bounded() {
        assert_eq!(parse_seconds(None), Ok(DEFAULT_SECONDS));
        assert_eq!(parse_seconds(Some("5")), Ok(5));
        for bad in ["0", "-1", "1.5", "x", "121", ""] {
            assert!(parse_seconds(Some(bad)).is_err(), "{bad}");
        }
    }
}
