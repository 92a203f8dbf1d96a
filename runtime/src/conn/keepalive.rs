//! Server pings, and the decision that a silent peer is dead.
//!
//! Pongs are seen only while something reads the socket, so silence counts only while a read
//! was waiting: a busy handler is not a dead peer, its pong is just not read yet.
//!
//! The writer sends the pings, and wakes at the pong's deadline only when no pong came: the
//! reader, reading it, moves the writer's timer on to the next ping (a connection answering
//! its pings costs the writer one wake-up per ping, not two).
//!
//! Deadlines are rounded up to a grid of at most [`GRID`] (a sixteenth of the interval, or of
//! the pong timeout for a pong deadline, when that is shorter), the same grid for every
//! connection: the connections whose pings fall due in one grid step are woken together, in
//! one turn of the worker thread, instead of each in a millisecond of its own (100,000
//! connections pinged every 25 s would otherwise wake the thread about every millisecond).

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::{Conn, ConnConfig};

/// What keep-alive asks of the writer.
pub(super) enum Beat {
    Ping,
    /// No pong while a read was waiting: close the connection.
    Dead,
}

/// Keep-alive of a connection with server pings (the interval and the pong timeout are the
/// app's, in [`ConnConfig`]).
pub(super) struct Keepalive {
    /// The ping in flight: when it was sent and how many frames had been read then.
    outstanding: Option<(Instant, u64)>,
    sleep: Pin<Box<Sleep>>,
}

impl Keepalive {
    /// `None` when the app sends no pings.
    pub(super) fn new(config: &ConnConfig) -> Option<Self> {
        let interval = config.ping_interval?;
        let first = on_grid(Instant::now() + interval, interval);
        Some(Self {
            outstanding: None,
            sleep: Box::pin(tokio::time::sleep_until(first)),
        })
    }

    /// The reader read a pong: with a ping in flight, the next wake-up is the next ping.
    pub(super) fn answered(&mut self, config: &ConnConfig) {
        if let (Some(interval), Some((sent, _))) = (config.ping_interval, self.outstanding) {
            self.outstanding = None;
            self.sleep
                .as_mut()
                .reset(on_grid(sent + interval, interval));
        }
    }

    pub(super) fn poll(&mut self, cx: &mut Context<'_>, conn: &Conn) -> Poll<Beat> {
        let (Some(interval), timeout) = (conn.config.ping_interval, conn.config.pong_timeout)
        else {
            return Poll::Pending;
        };
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let now = Instant::now();
        let read = conn.frames_read();
        match self.outstanding.take() {
            None => {
                self.outstanding = Some((now, read));
                self.sleep.as_mut().reset(on_grid(now + timeout, timeout));
                Poll::Ready(Beat::Ping)
            }
            Some((sent, read_then)) => {
                if read == read_then && conn.is_read_pending() {
                    // (The writer then drops keep-alive: no more pings.)
                    return Poll::Ready(Beat::Dead);
                }
                self.sleep
                    .as_mut()
                    .reset(on_grid((sent + interval).max(now), interval));
                // Poll again so the timer is registered with this waker.
                self.poll(cx, conn)
            }
        }
    }
}

/// The coarsest step keep-alive deadlines are rounded up to.
const GRID: Duration = Duration::from_millis(100);

/// `deadline`, a `span` from now, rounded up to the process's grid: a step of [`GRID`], or
/// of a sixteenth of `span` when that is shorter (so short test intervals stay short).
fn on_grid(deadline: Instant, span: Duration) -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let step = GRID.min(span / 16).as_nanos();
    if step == 0 {
        return deadline;
    }
    let origin = *ORIGIN.get_or_init(Instant::now);
    // How far past the last grid point at or before `deadline` (the grid extends both ways
    // from the origin: a paused test clock may stand before it).
    let past = match deadline.checked_duration_since(origin) {
        Some(since) => since.as_nanos() % step,
        None => (step - (origin - deadline).as_nanos() % step) % step,
    };
    if past == 0 {
        return deadline;
    }
    // `step - past` is below `step`, at most 100 ms: it fits.
    deadline + Duration::from_nanos(u64::try_from(step - past).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::*;
    use crate::conn::ConnConfig;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The writer's side of keep-alive, polled with a counting waker, the clock moved on
    /// `by` first: what it asks for, and how often the writer was woken meanwhile.
    async fn after(
        keepalive: &mut Keepalive,
        conn: &Conn,
        wakes: &Arc<Wakes>,
        by: Duration,
    ) -> (Option<&'static str>, usize) {
        let before = wakes.0.load(Ordering::SeqCst);
        tokio::time::advance(by).await;
        let woken = wakes.0.load(Ordering::SeqCst) - before;
        let waker = Waker::from(wakes.clone());
        let beat = match keepalive.poll(&mut Context::from_waker(&waker), conn) {
            Poll::Ready(Beat::Ping) => Some("ping"),
            Poll::Ready(Beat::Dead) => Some("dead"),
            Poll::Pending => None,
        };
        (beat, woken)
    }

    /// A client's bytes, from memory; what the server writes is dropped.
    struct Client(Vec<u8>);

    impl tokio::io::AsyncRead for Client {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.0.is_empty() {
                return Poll::Pending;
            }
            let n = self.0.len().min(buf.remaining());
            buf.put_slice(&self.0[..n]);
            self.0.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    impl tokio::io::AsyncWrite for Client {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_reader_reading_a_pong_tells_keep_alive() {
        use tokio_tungstenite::tungstenite::Message;

        let conn = Conn::new(Arc::new(ConnConfig::new()));
        *crate::conn::lock(&conn.keepalive) = Keepalive::new(&conn.config);
        // An empty pong, masked, as a client sends it.
        let client = Client(vec![0x8A, 0x80, 1, 2, 3, 4]);
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        let socket = crate::conn::Socket::server(client, config, conn.clone()).await;
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        tokio::time::advance(Duration::from_secs(26)).await;
        let awaited = |conn: &Conn| {
            crate::conn::lock(&conn.keepalive)
                .as_ref()
                .is_some_and(|k| k.outstanding.is_some())
        };
        let beat = crate::conn::lock(&conn.keepalive)
            .as_mut()
            .map(|k| k.poll(&mut cx, &conn));
        assert!(matches!(beat, Some(Poll::Ready(Beat::Ping))));
        assert!(awaited(&conn), "the ping's pong is awaited");
        let read = socket.poll_next(&mut cx);
        assert!(matches!(
            read,
            crate::conn::Read::Message(Some(Ok(Message::Pong(_))))
        ));
        assert!(!awaited(&conn), "the pong read ends the wait");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pong_moves_the_writers_wake_up_to_the_next_ping_and_silence_is_dead() {
        let conn = Conn::new(Arc::new(ConnConfig::new())); // ping every 25 s, pong in 20 s
        let wakes = Arc::new(Wakes::default());
        let mut keepalive = Keepalive::new(&conn.config).unwrap();
        let s = Duration::from_secs;
        assert_eq!(after(&mut keepalive, &conn, &wakes, s(0)).await, (None, 0));
        assert_eq!(
            after(&mut keepalive, &conn, &wakes, s(26)).await,
            (Some("ping"), 1)
        );
        // The pong is read: no wake-up at the pong's deadline, the next is the next ping.
        conn.frame_read();
        keepalive.answered(&conn.config);
        assert_eq!(after(&mut keepalive, &conn, &wakes, s(21)).await, (None, 0));
        assert_eq!(
            after(&mut keepalive, &conn, &wakes, s(5)).await,
            (Some("ping"), 1)
        );
        // No pong while a read waits: woken at the pong's deadline, the peer is dead.
        conn.set_read_pending(true);
        assert_eq!(
            after(&mut keepalive, &conn, &wakes, s(21)).await,
            (Some("dead"), 1)
        );
    }

    #[test]
    fn deadlines_fall_on_one_grid_and_never_earlier() {
        let span = Duration::from_secs(25);
        let now = Instant::now();
        let rounded: Vec<Instant> = (0..50u64)
            .map(|ms| on_grid(now + span + Duration::from_millis(ms * 7), span))
            .collect();
        for (ms, at) in (0..50u64).zip(&rounded) {
            let asked = now + span + Duration::from_millis(ms * 7);
            assert!(*at >= asked, "never earlier than asked");
            assert!(*at - asked < GRID, "later by less than one step");
        }
        // 350 ms of deadlines fall on at most five steps.
        let mut steps = rounded.clone();
        steps.dedup();
        assert!(steps.len() <= 5, "{} distinct deadlines", steps.len());
        // A short span gets a finer grid.
        let short = Duration::from_millis(160);
        let at = on_grid(now + short, short);
        assert!(at - (now + short) < Duration::from_millis(10));
        // Before the grid's origin (a paused clock may stand there), the same grid.
        let early = now - Duration::from_secs(3_600);
        let rounded: Vec<Instant> = (0..50u64)
            .map(|ms| on_grid(early + Duration::from_millis(ms * 7), span))
            .collect();
        for (ms, at) in (0..50u64).zip(&rounded) {
            let asked = early + Duration::from_millis(ms * 7);
            assert!(*at >= asked && *at - asked < GRID);
        }
        let mut steps = rounded;
        steps.dedup();
        assert!(steps.len() <= 5, "{} distinct deadlines", steps.len());
    }
}
