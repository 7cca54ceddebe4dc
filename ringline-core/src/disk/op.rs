//! [`DiskOp`]: one disk operation from admission to result, shared by every disk future.
//!
//! States: `Queued` (waiting FIFO for a `disk_ops_in_flight` slot, holding the request) →
//! `InFlight` (the request went to the backend through the outbox; the key names the slot) →
//! `Finished`. Dropping a queued operation leaves the queue and returns nothing to anyone;
//! dropping an in-flight one marks its slot abandoned, so the buffer is freed only when the
//! terminal completion brings it back (API R7).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::contract::{DiskKey, FileOp, NvmeOp};
use super::table::{Class, Done};
use crate::driver::Op;
use crate::error::Error;
use crate::runtime::context::with_core;

/// What a [`DiskOp`] asks the backend to do.
#[derive(Debug)]
pub(crate) enum Request {
    File(FileOp),
    Nvme(NvmeOp),
}

impl Request {
    fn class(&self) -> Class {
        match self {
            Request::File(_) => Class::File,
            Request::Nvme(_) => Class::Nvme,
        }
    }

    fn into_op(self, key: DiskKey) -> Op {
        match self {
            Request::File(op) => Op::File { key, op },
            Request::Nvme(op) => Op::Nvme { key, op },
        }
    }
}

enum State {
    Queued { req: Option<Request>, ticket: Option<u64> },
    InFlight(DiskKey),
    Finished,
}

/// A future resolving to the operation's [`Done`], or to the error and the request back when
/// it could not be submitted (off a worker).
pub(crate) struct DiskOp {
    uid: Option<u64>,
    state: State,
    _not_send: PhantomData<*const ()>,
}

impl DiskOp {
    pub(crate) fn new(req: Request) -> DiskOp {
        DiskOp { uid: None, state: State::Queued { req: Some(req), ticket: None }, _not_send: PhantomData }
    }
}

impl Unpin for DiskOp {}

impl Future for DiskOp {
    type Output = Result<Done, (Error, Option<Request>)>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let polled = with_core(|core| {
            if *this.uid.get_or_insert(core.uid) != core.uid {
                return Err(Error::NotInRuntime);
            }
            let mut table = core.disk.borrow_mut();
            match &mut this.state {
                State::Queued { req, ticket } => {
                    let class = req.as_ref().map_or(Class::File, Request::class);
                    match table.admit(*ticket, class, cx.waker()) {
                        Ok(key) => {
                            if let Some(r) = req.take() {
                                core.outbox.borrow_mut().push(r.into_op(key));
                            }
                            // The completion wakes the waker the table now holds.
                            this.state = State::InFlight(key);
                        }
                        Err(t) => *ticket = Some(t),
                    }
                    Ok(Poll::Pending)
                }
                State::InFlight(key) => match table.take(*key, cx.waker()) {
                    Some(done) => {
                        this.state = State::Finished;
                        Ok(Poll::Ready(done))
                    }
                    None => Ok(Poll::Pending),
                },
                State::Finished => Err(Error::InvalidInput("disk operation polled after completion")),
            }
        });
        match polled.unwrap_or(Err(Error::NotInRuntime)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(done)) => Poll::Ready(Ok(done)),
            Err(e) => {
                let req = match &mut this.state {
                    State::Queued { req, ticket: None } => req.take(),
                    _ => None,
                };
                if req.is_some() {
                    this.state = State::Finished;
                }
                Poll::Ready(Err((e, req)))
            }
        }
    }
}

impl Drop for DiskOp {
    fn drop(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Finished);
        let leftover = with_core(|core| {
            if self.uid.is_some_and(|u| u != core.uid) {
                return None;
            }
            let mut table = core.disk.borrow_mut();
            match state {
                State::Queued { ticket: Some(t), .. } => {
                    table.leave(t);
                    None
                }
                State::InFlight(key) => table.abandon(key),
                _ => None,
            }
        });
        // Buffers and descriptors are dropped outside the table borrow.
        drop(leftover);
    }
}
