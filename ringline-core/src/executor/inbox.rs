//! The cross-thread inbox of a worker: wakes, accepted connections, remote spawns, notifies.
//!
//! Producers push under a short mutex and unpark the worker only when the inbox goes from empty
//! to non-empty (an atomic flag), so a burst of wakes costs one unpark. The worker clears the flag
//! before taking the messages, so a message pushed after the take always unparks again.

use std::future::Future;
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::task::TaskId;
use crate::driver::Unpark;

/// A closure run on the worker that returns the future to spawn there.
pub type RemoteSpawn = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A message for a worker from another thread.
pub(crate) enum InboxMsg {
    /// A task was woken from another thread.
    Wake(TaskId),
    /// The acceptor hands over a connection.
    Accept(TcpStream),
    /// Spawn a task built by the closure.
    Spawn(RemoteSpawn),
}

/// Object-safe form of [`Unpark`].
pub(crate) trait DynUnpark: Send + Sync {
    fn unpark_dyn(&self);
}

impl<U: Unpark> DynUnpark for U {
    fn unpark_dyn(&self) {
        self.unpark();
    }
}

/// One worker's inbox.
pub(crate) struct Inbox {
    messages: Mutex<Vec<InboxMsg>>,
    has_messages: AtomicBool,
    unparker: Box<dyn DynUnpark>,
}

impl Inbox {
    pub(crate) fn new(unparker: Box<dyn DynUnpark>) -> Self {
        Inbox { messages: Mutex::new(Vec::new()), has_messages: AtomicBool::new(false), unparker }
    }

    /// Posts a message and unparks the worker if the inbox was empty.
    pub(crate) fn push(&self, msg: InboxMsg) {
        self.messages.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
        if !self.has_messages.swap(true, Ordering::AcqRel) {
            self.unparker.unpark_dyn();
        }
    }

    /// Wakes the worker without a message (notify, shutdown).
    pub(crate) fn unpark(&self) {
        self.unparker.unpark_dyn();
    }

    /// Takes every queued message, in order.
    pub(crate) fn drain(&self, into: &mut Vec<InboxMsg>) {
        // A plain load first: the common empty case costs no locked instruction.
        if !self.has_messages.load(Ordering::Acquire) || !self.has_messages.swap(false, Ordering::AcqRel) {
            return;
        }
        into.append(&mut self.messages.lock().unwrap_or_else(|e| e.into_inner()));
    }
}
