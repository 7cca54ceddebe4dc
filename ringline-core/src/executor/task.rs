//! Task identity ([`TaskId`]) and the slab of tasks with generation-checked slots.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::waker::TaskWaker;
use crate::driver::ConnKey;

/// A boxed task future.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = ()>>>;

/// Identifies one task: slot index plus generation, so an old id never reaches a new task.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TaskId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl TaskId {
    /// Aborts the task if it is still the one this id names; false when it already ended (or
    /// its slot now holds another task) or when called off its worker.
    pub fn abort(self) -> bool {
        crate::runtime::context::with_core(|core| core.abort_task(self)).unwrap_or(false)
    }
}

/// What a task is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TaskKind {
    /// Spawned with `spawn`; counts against `standalone_task_capacity`.
    Standalone,
    /// The task of an inbound connection (returned by `on_accept`).
    Conn(ConnKey),
    /// A handler entry point (`on_start`, `on_udp_bind`): standalone, but not counted against
    /// `standalone_task_capacity` (API 5), so a full slab never keeps a worker from starting.
    Entry,
}

pub(crate) struct TaskSlot {
    pub(crate) generation: u32,
    pub(crate) future: Option<BoxFuture>,
    pub(crate) waker: Option<Arc<TaskWaker>>,
    pub(crate) kind: TaskKind,
    pub(crate) live: bool,
    /// Being polled right now (its future is out of the slab).
    pub(crate) polling: bool,
    /// Abort requested while polling: drop after the poll.
    pub(crate) abort_requested: bool,
}

/// Slab of tasks; connection tasks and standalone tasks share it, with separate limits.
pub(crate) struct TaskSlab {
    slots: Vec<TaskSlot>,
    free: Vec<u32>,
    standalone_live: usize,
    standalone_capacity: usize,
    live: usize,
}

impl TaskSlab {
    pub(crate) fn new(standalone_capacity: usize) -> Self {
        TaskSlab { slots: Vec::new(), free: Vec::new(), standalone_live: 0, standalone_capacity, live: 0 }
    }

    pub(crate) fn standalone_full(&self) -> bool {
        self.standalone_live >= self.standalone_capacity
    }

    pub(crate) fn live(&self) -> usize {
        self.live
    }

    pub(crate) fn standalone_live(&self) -> usize {
        self.standalone_live
    }

    /// Reserves a slot; the caller then fills it with [`TaskSlab::fill`].
    pub(crate) fn insert(&mut self, kind: TaskKind) -> TaskId {
        if kind == TaskKind::Standalone {
            self.standalone_live += 1;
        }
        self.live += 1;
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(TaskSlot {
                    generation: 0,
                    future: None,
                    waker: None,
                    kind,
                    live: false,
                    polling: false,
                    abort_requested: false,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.kind = kind;
        slot.live = true;
        slot.polling = false;
        slot.abort_requested = false;
        TaskId { index, generation: slot.generation }
    }

    pub(crate) fn fill(&mut self, id: TaskId, future: BoxFuture, waker: Arc<TaskWaker>) {
        if let Some(slot) = self.get_mut(id) {
            slot.future = Some(future);
            slot.waker = Some(waker);
        }
    }

    pub(crate) fn get_mut(&mut self, id: TaskId) -> Option<&mut TaskSlot> {
        self.slots.get_mut(id.index as usize).filter(|s| s.live && s.generation == id.generation)
    }

    /// Frees the slot; returns the future (if not being polled) so the caller drops it outside
    /// any borrow of the slab.
    pub(crate) fn remove(&mut self, id: TaskId) -> Option<(TaskKind, Option<BoxFuture>)> {
        let slot = self.get_mut(id)?;
        slot.live = false;
        slot.generation = slot.generation.wrapping_add(1);
        slot.waker = None;
        let future = slot.future.take();
        let kind = slot.kind;
        if kind == TaskKind::Standalone {
            self.standalone_live -= 1;
        }
        self.live -= 1;
        self.free.push(id.index);
        Some((kind, future))
    }

    /// Ids of every live task (for shutdown).
    pub(crate) fn live_ids(&self) -> Vec<TaskId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live)
            .map(|(i, s)| TaskId { index: i as u32, generation: s.generation })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_ids_do_not_reach_new_tasks() {
        let mut slab = TaskSlab::new(4);
        let a = slab.insert(TaskKind::Standalone);
        slab.remove(a);
        let b = slab.insert(TaskKind::Standalone);
        assert_eq!(a.index, b.index);
        assert!(slab.get_mut(a).is_none());
        assert!(slab.get_mut(b).is_some());
        assert!(slab.remove(a).is_none());
    }

    #[test]
    fn standalone_capacity_is_counted_apart_from_conn_tasks() {
        let mut slab = TaskSlab::new(1);
        let _ = slab.insert(TaskKind::Conn(ConnKey { index: 0, generation: 0 }));
        assert!(!slab.standalone_full());
        let s = slab.insert(TaskKind::Standalone);
        assert!(slab.standalone_full());
        slab.remove(s);
        assert!(!slab.standalone_full());
    }
}
