//! Scheduling hints for latency-sensitive threads. Linux's EEVDF scheduler
//! (6.6 on) lets a woken thread preempt a running one only when its
//! virtual deadline is earlier, and the deadline is a slice away: with the
//! default slice (about 3 ms) a thread that wakes for a query on a busy
//! machine waits up to a slice for its core whatever its nice value. A
//! thread that asks for a short slice (`sched_runtime` of `sched_setattr`,
//! honoured for normal threads since 6.12, no privilege needed) gets an
//! early deadline each time it wakes, and so runs at once, while its share
//! of the CPU stays what its nice value says.

/// Slice the latency-sensitive threads ask for: the kernel's minimum.
#[cfg(target_os = "linux")]
const SHORT_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` of sched_setattr(2) and sched_getattr(2), first
/// version (48 bytes).
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Asks for a short scheduling slice for the calling thread. True when the
/// kernel took it; older kernels and other systems ignore the request.
pub fn short_slice() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpriority reads only its integer arguments.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: libc::SCHED_OTHER as u32,
            flags: 0,
            nice,
            priority: 0,
            runtime: SHORT_SLICE_NS,
            deadline: 0,
            period: 0,
        };
        // SAFETY: the kernel reads `size` bytes of a live, initialised
        // sched_attr; pid 0 is the calling thread.
        unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_granted_short_slice_is_what_the_thread_runs_with() {
        // On a thread of its own: the test harness's threads keep theirs.
        std::thread::spawn(|| {
            let granted = short_slice();
            #[cfg(target_os = "linux")]
            if granted {
                let mut attr = SchedAttr::default();
                // SAFETY: the kernel writes at most `size` bytes into a live Attr.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_sched_getattr,
                        0,
                        &mut attr as *mut SchedAttr,
                        std::mem::size_of::<SchedAttr>() as u32,
                        0,
                    )
                };
                assert_eq!(rc, 0);
                assert_eq!(attr.policy, libc::SCHED_OTHER as u32);
                assert_eq!(attr.runtime, SHORT_SLICE_NS);
            }
            #[cfg(not(target_os = "linux"))]
            assert!(!granted);
        })
        .join()
        .unwrap();
    }
}
