//! Finding every process a command started, even those that left its
//! process group (`setsid`, a double fork, a daemon): each command runs with
//! a job mark in its environment, which its descendants inherit, and when
//! the command ends (or times out, or is cancelled) every process that
//! still carries the mark is killed. A process that also clears its
//! environment (`setsid env -i …` after a double fork) is caught when the
//! program has chosen to adopt orphans (`adopt_orphans`, the agent's CLI
//! does): it is reparented to us, and every child of ours that is not a
//! running command is killed.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The environment variable that marks a command's processes.
pub const MARK_VAR: &str = "DECACHE_AGENT_JOB";

/// A fresh mark for one command: unique in this process and across
/// processes (it holds our pid).
pub fn new_mark() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

static ADOPTING: AtomicBool = AtomicBool::new(false);
/// The shells of the commands running now (their pids): our children that
/// are not orphans.
static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Makes this process the reaper of its commands' orphans (Linux
/// `PR_SET_CHILD_SUBREAPER`): a process that double-forks out of a command
/// is reparented here, not to init, and `kill_adopted` kills it after the
/// command. Only for a program whose every child process is a command (the
/// agent's CLI); a library or a test harness with other children must not
/// call it. Returns whether the system allowed it.
pub fn adopt_orphans() -> bool {
    #[cfg(target_os = "linux")]
    if nix::sys::prctl::set_child_subreaper(true).is_ok() {
        ADOPTING.store(true, Ordering::Relaxed);
        return true;
    }
    false
}

/// Registers a command's shell as running until the guard is dropped.
pub struct Running(i32);

impl Running {
    pub fn new(pid: u32) -> Running {
        let pid = pid as i32;
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        Running(pid)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != self.0);
    }
}

/// When orphans are adopted: kills (and reaps) every child of this process
/// that is not a running command's shell, again while killing one orphans
/// more. Returns how many were killed.
#[cfg(target_os = "linux")]
pub fn kill_adopted() -> usize {
    if !ADOPTING.load(Ordering::Relaxed) {
        return 0;
    }
    let me = std::process::id() as i32;
    let adopted = || {
        let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).clone();
        pids().filter(|&p| parent_of(p) == Some(me) && !running.contains(&p)).collect()
    };
    // Our children: reaped once killed (a zombie stays listed until then).
    kill_until_none(200, adopted, true)
}

/// Kills what `find` lists, again until it lists nothing (killing a process
/// may orphan or reveal more), at most `rounds` times; each is stopped first
/// so that it cannot fork between the scan and the kill. `reap`: they are
/// our children, wait for each. Returns how many were killed.
#[cfg(target_os = "linux")]
fn kill_until_none(rounds: usize, mut find: impl FnMut() -> Vec<i32>, reap: bool) -> usize {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let mut killed = 0;
    for _ in 0..rounds {
        let found = find();
        if found.is_empty() {
            break;
        }
        for pid in found.into_iter().map(Pid::from_raw) {
            let _ = kill(pid, Signal::SIGSTOP);
            if kill(pid, Signal::SIGKILL).is_ok() {
                killed += 1;
                if reap {
                    let _ = nix::sys::wait::waitpid(pid, None);
                }
            }
        }
        if !reap {
            // Not our children: give the kernel a moment to take them down.
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    killed
}

#[cfg(not(target_os = "linux"))]
pub fn kill_adopted() -> usize {
    0
}

#[cfg(target_os = "linux")]
fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
}

/// The parent pid of `pid` (`/proc/PID/stat`, the field after the state).
#[cfg(target_os = "linux")]
fn parent_of(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The fields of `/proc/PID/stat` after the command name (which is in
/// parentheses and may hold spaces): state, parent pid, …
#[cfg(target_os = "linux")]
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')')?.1.split_whitespace().map(str::to_string).collect())
}

/// Kill every process of this user whose environment holds `MARK_VAR=mark`,
/// scanning again until a scan finds none (a forking process may have made
/// new ones meanwhile), at most `rounds` times. Returns how many were killed.
#[cfg(target_os = "linux")]
pub fn kill_marked(mark: &str, rounds: usize) -> usize {
    let needle = format!("{MARK_VAR}={mark}");
    kill_until_none(rounds, || marked(&needle), false)
}

#[cfg(not(target_os = "linux"))]
pub fn kill_marked(_mark: &str, _rounds: usize) -> usize {
    0
}

/// Live (not zombie) processes whose environment holds `needle` as one entry.
#[cfg(target_os = "linux")]
fn marked(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    pids()
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
    // Gone (no stat) counts as dead too.
    stat_fields(pid).and_then(|f| f.first().cloned()).is_none_or(|s| s == "Z" || s == "X")
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
