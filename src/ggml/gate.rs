//! One graph at a time across sessions that share the CPU.
//!
//! Every session owns a thread pool sized to the machine. When several
//! sessions compute at once (a server's slots), their pools' spinning
//! barriers fight over the same cores and each step takes several times as
//! long as it would alone. Sessions given the same gate take turns instead:
//! each step runs with the whole machine, and a session that finishes a step
//! while others wait lets its threads sleep at once instead of polling.
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A session whose last turn ended this recently counts as active (longer
/// than a short prefill turn, or the streaming session it waited behind
/// would look idle by the time that turn ends).
const ACTIVE: Duration = Duration::from_secs(1);

/// A first-come, first-served turn: a session that computes step after step
/// (a long prefill) cannot take the next turn ahead of one already waiting.
#[derive(Debug, Default)]
pub struct ComputeGate {
    /// (next ticket to hand out, ticket whose turn it is).
    tickets: Mutex<(u64, u64)>,
    turn: Condvar,
    /// When each member's last turn ended.
    members: Mutex<Vec<Option<Instant>>>,
}

impl ComputeGate {
    pub fn new() -> ComputeGate {
        ComputeGate::default()
    }

    /// A new member: the id it computes under.
    pub fn join(&self) -> usize {
        let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
        m.push(None);
        m.len() - 1
    }

    /// Whether a member other than `me` (who asks between its own turns)
    /// computes now, waits for a turn, or computed lately (a conversation
    /// streaming tokens): a long prefill should then come in short turns.
    pub fn others_active(&self, me: usize) -> bool {
        self.busy()
            || self
                .members
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .enumerate()
                .any(|(id, t)| id != me && t.is_some_and(|t| t.elapsed() < ACTIVE))
    }

    /// Run `f` as member `me`, in turn: after every member that asked before.
    pub fn run<T>(&self, me: usize, f: impl FnOnce() -> T) -> T {
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = t.0;
        t.0 += 1;
        while t.1 != ticket {
            t = self.turn.wait(t).unwrap_or_else(|e| e.into_inner());
        }
        drop(t);
        // The turn passes on even if `f` panics.
        struct Next<'a>(&'a ComputeGate, usize);
        impl Drop for Next<'_> {
            fn drop(&mut self) {
                if let Some(t) = self.0.members.lock().unwrap_or_else(|e| e.into_inner()).get_mut(self.1) {
                    *t = Some(Instant::now());
                }
                self.0.tickets.lock().unwrap_or_else(|e| e.into_inner()).1 += 1;
                self.0.turn.notify_all();
            }
        }
        let _next = Next(self, me);
        f()
    }

    /// Whether any turn is taken or asked for.
    fn busy(&self) -> bool {
        let t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        t.0 > t.1
    }

    /// Whether another session waits for its turn (asked while this one computes).
    pub fn contended(&self) -> bool {
        let t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        t.0 > t.1 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn turns_never_overlap() {
        let gate = Arc::new(ComputeGate::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (gate, inside) = (gate.clone(), inside.clone());
                std::thread::spawn(move || {
                    let me = gate.join();
                    for _ in 0..200 {
                        gate.run(me, || {
                            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two turns at once");
                            std::thread::yield_now();
                            inside.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(!gate.contended());
    }

    #[test]
    fn a_waiting_session_goes_before_the_next_turn_of_a_busy_one() {
        let gate = Arc::new(ComputeGate::new());
        let (busy, other) = (gate.join(), gate.join());
        let order = Arc::new(Mutex::new(Vec::new()));
        let (g, o) = (gate.clone(), order.clone());
        assert!(!gate.others_active(busy), "nobody computed yet");
        let waiter = gate.run(busy, || {
            let w = std::thread::spawn(move || g.run(other, || o.lock().unwrap().push("waiter")));
            while !gate.contended() {
                std::thread::yield_now();
            }
            w
        });
        // The busy session asks again at once, after the waiter asked.
        gate.run(busy, || order.lock().unwrap().push("busy again"));
        waiter.join().unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["waiter", "busy again"]);
        assert!(gate.others_active(busy), "the other member computed just now");
        std::thread::sleep(ACTIVE);
        assert!(!gate.others_active(busy), "and then went quiet");
    }

    #[test]
    fn a_member_computing_now_is_active_however_long_its_turn() {
        let gate = Arc::new(ComputeGate::new());
        let (me, other) = (gate.join(), gate.join());
        let (inside_tx, inside_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let g = gate.clone();
        let t = std::thread::spawn(move || {
            g.run(other, || {
                inside_tx.send(()).unwrap();
                done_rx.recv().unwrap();
            })
        });
        inside_rx.recv().unwrap();
        assert!(gate.others_active(me), "the other member holds the turn");
        done_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
