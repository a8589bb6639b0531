//! `ProcEvents`: the stream a `watch` returns.

use crate::backend::Backend;
use crate::loom::Arc;
use crate::registry::{Actions, PopStatus, StreamId};
use crate::shared::Shared;
use crate::{Interest, Pid, ProcEvent};
use futures_core::stream::{FusedStream, Stream};
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

/// How many events one lock acquisition moves into the stream's own buffer.
const READ_BATCH: usize = 64;

/// A stream of [`ProcEvent`]s about one watched process and, with [`Interest::TRACK`], every
/// process it creates.
///
/// Returned by [`ProcWatcher::watch`](crate::ProcWatcher::watch) (and `spawn`, and
/// [`ProcWatcher::watch_system`](crate::ProcWatcher::watch_system), whose one stream is about
/// every process on the host). It yields events in the order the crate guarantees (see the
/// crate docs) and ends (`None`) once every process it tracks has delivered its `Exit`, or
/// once the watcher has shut down and what it held is read.
///
/// # Cancel safety
///
/// `next()` (from `futures::StreamExt` or `tokio_stream::StreamExt`) is cancel-safe: an event
/// is taken out of the stream only when `poll_next` returns it, so a `tokio::select!` branch
/// that loses the race loses no event.
///
/// # Caveats
///
/// Dropping the stream detaches it: its knotes are unlinked and freed at once, under the
/// registry lock, without waiting for anything. Events it had not read are discarded. Other
/// streams on the same pids are not affected.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), procwatch::Error> {
/// use futures::StreamExt;
/// use procwatch::{Interest, Pid, ProcEvent, ProcWatcher};
///
/// let watcher = ProcWatcher::new()?;
/// let pid = Pid::from_raw(1234).unwrap();
/// let mut events = watcher.watch(pid, Interest::EXIT | Interest::TRACK)?;
/// while let Some(ev) = events.next().await {
///     if let ProcEvent::Exit { pid, status, .. } = ev {
///         println!("{pid} exited: {status:?}");
///     }
/// }
/// # Ok(()) }
/// ```
pub struct ProcEvents {
    shared: Arc<Shared>,
    /// Told which processes the stream no longer follows when it is dropped.
    backend: std::sync::Arc<dyn Backend>,
    id: StreamId,
    pid: Pid,
    buf: VecDeque<ProcEvent>,
    /// Processes held at an event that sits in `buf` (`Interest::HOLD`).
    held_in_buf: Vec<Pid>,
    /// Processes held at an event already handed out: let go at the next poll.
    release_next: Vec<Pid>,
    done: bool,
}

impl ProcEvents {
    pub(crate) fn new(
        shared: Arc<Shared>,
        backend: std::sync::Arc<dyn Backend>,
        id: StreamId,
        pid: Pid,
    ) -> ProcEvents {
        ProcEvents {
            shared,
            backend,
            id,
            pid,
            buf: VecDeque::new(),
            held_in_buf: Vec::new(),
            release_next: Vec::new(),
            done: false,
        }
    }

    /// Takes the next buffered event, moving the hold of a process whose held event it is
    /// (its last one in the buffer) to [`ProcEvents::release_next`].
    fn take_buffered(&mut self) -> Option<ProcEvent> {
        let ev = self.buf.pop_front()?;
        if !self.held_in_buf.is_empty() {
            let pid = ev.pid();
            if let Some(i) = self.held_in_buf.iter().position(|&p| p == pid) {
                if !self.buf.iter().any(|e| e.pid() == pid) {
                    self.held_in_buf.swap_remove(i);
                    self.release_next.push(pid);
                }
            }
        }
        Some(ev)
    }

    /// The consumer polls again: it has moved past the held events it was handed.
    fn release_passed(&mut self) {
        if self.release_next.is_empty() {
            return;
        }
        let pids = std::mem::take(&mut self.release_next);
        let mut actions = Actions::default();
        self.shared.lock().release(&pids, &mut actions);
        actions.run(&*self.backend);
    }

    /// Moves up to a batch of events from the registry into the buffer.
    fn fill(&mut self, waker: Option<&std::task::Waker>) -> PopStatus {
        self.shared.lock().pop_holding(
            self.id,
            &mut self.buf,
            READ_BATCH,
            waker,
            &mut self.held_in_buf,
        )
    }

    /// The pid this stream was created for: 1 (init) for a
    /// [`watch_system`](crate::ProcWatcher::watch_system) stream, which has no single root.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The interest the stream has now.
    pub fn interest(&self) -> Interest {
        self.shared
            .lock()
            .interest(self.id)
            .unwrap_or(Interest::empty())
    }

    /// Changes what this stream wants from now on (kqueue lets a knote's `fflags` change the
    /// same way). Other streams on the same pids keep their own interest. Events of kinds
    /// dropped here that were already read into the stream's small internal buffer are still
    /// yielded; those still pending in the registry are not — except the `Child` of a process
    /// the stream already tracks, which always comes: it announces the process, and whatever
    /// a later interest lets through about it must come after it.
    ///
    /// Removing [`Interest::TRACK`] stops new children from being tracked; processes already
    /// tracked stay tracked. Adding [`Interest::HOLD`] holds the stream's processes, and
    /// the children they make, at their next `Child` and `Exec` events from now on (the call
    /// waits for the Ptrace backend's tracer to take the change, as `watch` does; a backend
    /// that cannot hold, Netlink, ignores it here; `watch` is where it refuses it); removing
    /// it lets the processes the stream holds run on once their held event is read, and
    /// holds nothing after that. Removing [`Interest::EXIT`] does not keep the stream open: it
    /// still ends when its processes are gone. An empty interest pauses the stream: it yields
    /// nothing but those `Child` events and [`ProcEvent::Lost`](crate::ProcEvent::Lost),
    /// tracks no new children, and ends when its processes are gone.
    pub fn set_interest(&mut self, interest: Interest) {
        let mut actions = Actions::default();
        self.shared
            .lock()
            .set_interest(self.id, interest, &mut actions);
        actions.run(&*self.backend);
    }

    /// How many processes this stream tracks now (alive, or gone with an exit not yet read).
    pub fn tracked(&self) -> usize {
        self.shared.lock().tracked_count(self.id)
    }

    /// Takes the next event if one is ready, without waiting: `Ok(Some(ev))` for an event,
    /// `Ok(None)` if none is ready yet.
    ///
    /// # Errors
    ///
    /// [`Finished`] once the stream has ended (every process it tracked is gone and its
    /// events were read, or the watcher shut down), and on every call after that.
    pub fn try_next(&mut self) -> Result<Option<ProcEvent>, Finished> {
        self.release_passed();
        if let Some(ev) = self.take_buffered() {
            return Ok(Some(ev));
        }
        if self.done {
            return Err(Finished);
        }
        match self.fill(None) {
            PopStatus::Ready => Ok(self.take_buffered()),
            PopStatus::Pending => Ok(None),
            PopStatus::Done => {
                self.done = true;
                Err(Finished)
            }
        }
    }
}

/// Returned by [`ProcEvents::try_next`] once the stream has ended.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub struct Finished;

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the event stream has ended")
    }
}

impl std::error::Error for Finished {}

impl Stream for ProcEvents {
    type Item = ProcEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ProcEvent>> {
        let this = self.get_mut();
        this.release_passed();
        if let Some(ev) = this.take_buffered() {
            return Poll::Ready(Some(ev));
        }
        if this.done {
            return Poll::Ready(None);
        }
        match this.fill(Some(cx.waker())) {
            PopStatus::Ready => Poll::Ready(this.take_buffered()),
            PopStatus::Pending => Poll::Pending,
            PopStatus::Done => {
                this.done = true;
                Poll::Ready(None)
            }
        }
    }
}

impl FusedStream for ProcEvents {
    fn is_terminated(&self) -> bool {
        self.done && self.buf.is_empty()
    }
}

impl Drop for ProcEvents {
    fn drop(&mut self) {
        let mut actions = Actions::default();
        let mut reg = self.shared.lock();
        reg.release(&self.release_next, &mut actions);
        reg.release(&self.held_in_buf, &mut actions);
        reg.remove_stream(self.id, &mut actions);
        drop(reg);
        actions.run(&*self.backend);
    }
}

impl fmt::Debug for ProcEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcEvents")
            .field("pid", &self.pid)
            .field("buffered", &self.buf.len())
            .field("done", &self.done)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_traits() {
        fn check<T: Stream<Item = ProcEvent> + FusedStream + Unpin + Send + Sync + 'static>() {}
        check::<ProcEvents>();
        fn event<T: fmt::Debug + Clone + PartialEq + Eq + Send + Sync>() {}
        event::<ProcEvent>();
    }
}
