//! Server pings, and the decision that a silent peer is dead.
//!
//! Pongs are seen only while something reads the socket, so silence counts only while a read
//! was waiting: a busy handler is not a dead peer, its pong is just not read yet.

use std::pin::Pin;
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

pub(super) struct Keepalive {
    interval: Option<Duration>,
    timeout: Duration,
    /// The ping in flight: when it was sent and how many frames had been read then.
    outstanding: Option<(Instant, u64)>,
    sleep: Pin<Box<Sleep>>,
}

impl Keepalive {
    pub(super) fn new(config: &ConnConfig) -> Self {
        let first = config
            .ping_interval
            .map_or(Instant::now() + Duration::from_secs(86_400 * 365), |i| {
                Instant::now() + i
            });
        Self {
            interval: config.ping_interval,
            timeout: config.pong_timeout,
            outstanding: None,
            sleep: Box::pin(tokio::time::sleep_until(first)),
        }
    }

    pub(super) fn poll(&mut self, cx: &mut Context<'_>, conn: &Conn) -> Poll<Beat> {
        let Some(interval) = self.interval else {
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
                self.sleep.as_mut().reset(now + self.timeout);
                Poll::Ready(Beat::Ping)
            }
            Some((sent, read_then)) => {
                if read == read_then && conn.is_read_pending() {
                    self.interval = None;
                    return Poll::Ready(Beat::Dead);
                }
                self.sleep.as_mut().reset((sent + interval).max(now));
                // Poll again so the timer is registered with this waker.
                self.poll(cx, conn)
            }
        }
    }
}
