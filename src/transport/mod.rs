//! Who can talk to the box. Transports turn bytes into command lines and replies back into
//! bytes; they never touch the tree. Every command then passes one door, [`crate::control`]
//! (bound, token check, parse), whichever transport brought it; the policy decides.

pub mod amqp;
pub mod sinks;
pub mod socket;

use crate::command::Reply;
use mio::Waker;
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// A command from a transport thread (AMQP), with the way back for its reply.
pub struct Request {
    pub raw: Vec<u8>,
    pub respond: Box<dyn FnOnce(Reply) + Send>,
}

/// The handle a transport thread holds: queue a request, and wake the loop to take it.
#[derive(Clone)]
pub struct Inbox {
    tx: Sender<Request>,
    waker: Arc<Waker>,
}

impl Inbox {
    pub fn new(tx: Sender<Request>, waker: Arc<Waker>) -> Inbox {
        Inbox { tx, waker }
    }

    /// False once the box has ended.
    pub fn send(&self, req: Request) -> bool {
        self.tx.send(req).is_ok() && self.waker.wake().is_ok()
    }
}
