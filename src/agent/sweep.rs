//! Finding every process a command started, even those that left its
//! process group (`setsid`, a double fork, a daemon): each command runs with
//! a job mark in its environment, which its descendants inherit, and when
//! the command ends (or times out, or is cancelled) every process that
//! still carries the mark is killed. A process escapes only by clearing
//! its own environment *and* leaving the group, which docs/RELIABILITY.md
//! states as a limit of the box.
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that marks a command's processes.
pub const MARK_VAR: &str = "DECACHE_AGENT_JOB";

/// A fresh mark for one command: unique in this process and across
/// processes (it holds our pid).
pub fn new_mark() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Kill every process of this user whose environment holds `MARK_VAR=mark`,
/// scanning again until a scan finds none (a forking process may have made
/// new ones meanwhile), at most `rounds` times. Returns how many were killed.
#[cfg(target_os = "linux")]
pub fn kill_marked(mark: &str, rounds: usize) -> usize {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let needle = format!("{MARK_VAR}={mark}");
    let mut killed = 0;
    for _ in 0..rounds {
        let found = marked(&needle);
        if found.is_empty() {
            break;
        }
        for pid in found {
            // Stop first so that it cannot fork between the scan and the kill.
            let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    killed
}

#[cfg(not(target_os = "linux"))]
pub fn kill_marked(_mark: &str, _rounds: usize) -> usize {
    0
}

/// Live (not zombie) processes whose environment holds `needle` as one entry.
#[cfg(target_os = "linux")]
fn marked(needle: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id() as i32;
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            // Another user's process, or one that is gone, reads as an error.
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { return false };
            env.split(|&b| b == 0).any(|entry| entry == needle.as_bytes()) && !is_zombie(pid)
        })
        .collect()
}

#[cfg(target_os = "linux")]
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
    // The state follows the command name, which is in parentheses and may hold spaces.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).is_none_or(|s| s == 'Z' || s == 'X')
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn marked_processes_are_found_and_killed_and_others_are_not() {
        let mark = new_mark();
        let other = new_mark();
        assert_ne!(mark, other);
        // One left in the group, one that left it with setsid.
        let mut a = Command::new("sh").args(["-c", "sleep 301"]).env(MARK_VAR, &mark).spawn().unwrap();
        let mut b = Command::new("setsid").args(["sleep", "302"]).env(MARK_VAR, &mark).spawn().unwrap();
        let mut c = Command::new("sleep").arg("303").env(MARK_VAR, &other).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        // sh may run its sleep as a child of its own: two or three processes.
        assert!(kill_marked(&mark, 10) >= 2);
        assert!(a.wait().is_ok() && b.wait().is_ok());
        assert!(c.try_wait().unwrap().is_none(), "a process of another mark was killed");
        assert_eq!(kill_marked(&other, 10), 1);
        assert_eq!(kill_marked(&mark, 10), 0, "a marked process survived");
        assert!(c.wait().is_ok());
    }
}
