//! Inbound frames into JSON payloads: bytes from a client, as the server reads them (the
//! WebSocket library with the framework's limits: 64 KiB messages and frames, a 512-byte read
//! buffer), and every text message parsed as JSON as `receive_json` does. Nothing panics.
#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::fuzz_target;
use tungstenite::Message;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

/// The client's bytes to read, and a sink for what the server writes (pongs, close frames).
struct Peer<'a> {
    input: &'a [u8],
}

impl Read for Peer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Peer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let config = WebSocketConfig::default()
        .read_buffer_size(512)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024));
    let mut socket = WebSocket::from_raw_socket(Peer { input: data }, Role::Server, Some(config));
    // Every frame read consumes input: the loop ends with the data.
    for _ in 0..=data.len() {
        match socket.read() {
            Ok(Message::Text(text)) => {
                let _ = serde_json::from_str::<serde_json::Value>(text.as_str());
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
});
