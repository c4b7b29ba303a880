//! Which worker gets the next run: a pure function with written-down
//! properties (see `README.md` beside this file).

/// What placement knows of one worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerView {
    pub capacity: u32,
    pub inflight: u32,
    pub draining: bool,
    /// Refused an assignment recently; skip it for a moment.
    pub blocked: bool,
}

impl WorkerView {
    fn free(&self) -> Option<u32> {
        if self.draining || self.blocked {
            return None;
        }
        self.capacity.checked_sub(self.inflight).filter(|f| *f > 0)
    }
}

/// The index of the worker to place the next run on, or `None` when no worker
/// can take it. `rotation` breaks ties in turn; pass a counter.
pub fn place(workers: &[WorkerView], rotation: usize) -> Option<usize> {
    let n = workers.len();
    if n == 0 {
        return None;
    }
    let start = rotation % n;
    let mut best: Option<(usize, u32)> = None;
    for k in 0..n {
        let i = (start + k) % n;
        if let Some(free) = workers[i].free() {
            if best.is_none_or(|(_, f)| free > f) {
                best = Some((i, free));
            }
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn worker() -> impl Strategy<Value = WorkerView> {
        (0u32..20, 0u32..25, any::<bool>(), prop::bool::weighted(0.1)).prop_map(
            |(capacity, inflight, draining, blocked)| WorkerView {
                capacity,
                inflight,
                draining,
                blocked,
            },
        )
    }

    proptest! {
        #[test]
        fn never_over_capacity_and_only_eligible(ws in prop::collection::vec(worker(), 0..12), rot in 0usize..100) {
            if let Some(i) = place(&ws, rot) {
                prop_assert!(ws[i].inflight < ws[i].capacity);
                prop_assert!(!ws[i].draining);
                prop_assert!(!ws[i].blocked);
            }
        }

        #[test]
        fn none_only_when_nobody_can_take_it(ws in prop::collection::vec(worker(), 0..12), rot in 0usize..100) {
            let any_free = ws.iter().any(|w| !w.draining && !w.blocked && w.inflight < w.capacity);
            prop_assert_eq!(place(&ws, rot).is_some(), any_free);
        }

        #[test]
        fn picks_a_worker_with_the_most_free_slots(ws in prop::collection::vec(worker(), 1..12), rot in 0usize..100) {
            if let Some(i) = place(&ws, rot) {
                let best = ws.iter().filter_map(|w| w.free()).max().unwrap();
                prop_assert_eq!(ws[i].free(), Some(best));
            }
        }

        #[test]
        fn placing_runs_spreads_them_evenly(n in 1usize..8, k in 0usize..200, cap in 1u32..100) {
            let mut ws = vec![WorkerView { capacity: cap.max(200), inflight: 0, draining: false, blocked: false }; n];
            for r in 0..k {
                let i = place(&ws, r).unwrap();
                ws[i].inflight += 1;
            }
            let min = ws.iter().map(|w| w.inflight).min().unwrap();
            let max = ws.iter().map(|w| w.inflight).max().unwrap();
            prop_assert!(max - min <= 1, "{:?}", ws);
        }
    }

    #[test]
    fn empty_registry_places_nothing() {
        assert_eq!(place(&[], 3), None);
    }
}
