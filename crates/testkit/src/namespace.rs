//! Faults that need a mount namespace: an exporter started in a private mount namespace of its
//! own, where the test mounts what it needs (a FIFO over a /proc file, a FUSE filesystem that
//! never answers) without touching the machine's mounts.

use std::ffi::{CString, OsStr};
use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::Exporter;

/// Mount namespaces are a machine permission, not a tool: a loud skip when refused.
pub fn mount_namespaces_work() -> bool {
    let ok = Command::new("unshare")
        .args(["-m", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: this machine refuses mount namespaces (unshare -m) ***\n"
        );
    }
    ok
}

/// Starts `bin` in a private mount namespace of its own; with `bind = Some((file, target))`
/// `file` is bind-mounted over `target` there before the exporter runs.
pub fn start_in_mount_namespace(
    bin: &str,
    args: &[&str],
    bind: Option<(&Path, &Path)>,
) -> Exporter {
    let c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).expect("path without NUL");
    let bind = bind.map(|(file, target)| (c(file), c(target)));
    let root = c(Path::new("/"));
    Exporter::start_customized(bin, args, &[], move |cmd| {
        // SAFETY: unshare and mount are async-signal-safe system calls on C strings made
        // before the fork; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let none = std::ptr::null();
                let ok = libc::unshare(libc::CLONE_NEWNS) == 0
                    && libc::mount(
                        none,
                        root.as_ptr(),
                        none,
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) == 0
                    && bind.as_ref().is_none_or(|(file, target)| {
                        libc::mount(
                            file.as_ptr(),
                            target.as_ptr(),
                            none,
                            libc::MS_BIND,
                            std::ptr::null(),
                        ) == 0
                    });
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    })
}

/// Runs `mount args…` inside the mount namespace of process `pid` (nsenter), handing it
/// `keep_fd` open (a /dev/fuse connection, for example).
pub fn mount_in(pid: i32, args: &[&OsStr], keep_fd: Option<RawFd>) {
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &pid.to_string(), "-m", "mount"]).args(args);
    if let Some(fd) = keep_fd {
        // SAFETY: fcntl is async-signal-safe; it clears close-on-exec on the child's copy.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let status = cmd.status().expect("nsenter");
    assert!(status.success(), "nsenter mount {args:?}: {status}");
}

/// A FUSE connection that never answers, mounted over `dir` in the namespace of process
/// `pid`: every call on the path (statvfs, a directory listing) waits in the kernel until the
/// returned file is closed.
pub fn mount_silent_fuse(pid: i32, dir: &Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let fuse = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .expect("/dev/fuse");
    let options = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0",
        fuse.as_raw_fd()
    );
    mount_in(
        pid,
        &[
            OsStr::new("-t"),
            OsStr::new("fuse"),
            OsStr::new("-o"),
            OsStr::new(&options),
            OsStr::new("silent"),
            dir.as_os_str(),
        ],
        Some(fuse.as_raw_fd()),
    );
    fuse
}
