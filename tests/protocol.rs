//! RFC 6455 conformance on raw sockets: a client that builds its own upgrade requests and
//! frames, as an attacker would. Every violation gets its close code at once (1002 protocol
//! error, 1007 invalid data, 1009 too big); a client that pings without reading cannot grow
//! the server's memory; request heads are bounded and kept whole. The cases follow what
//! Autobahn's test suite checks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchboard::prelude::*;
use switchboard::testing::TestServer;
use switchboard_tests::{WAIT, eventually};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Echoes every message, text as text and binary as binary.
#[ws_route("/echo")]
async fn echo(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await?;
    while let Some(message) = ws.receive().await? {
        match message {
            Message::Text(text) => ws.send_text(text).await?,
            Message::Binary(bytes) => ws.send_bytes(bytes).await?,
        }
    }
    Ok(())
}

/// Handlers run on `/counted-headers`.
static HEADERS_HANDLED: AtomicUsize = AtomicUsize::new(0);

/// `/headers`, counted (for one test only).
#[ws_route("/counted-headers")]
async fn counted_headers(ws: WebSocket) -> Result<(), WsError> {
    HEADERS_HANDLED.fetch_add(1, Ordering::SeqCst);
    headers(ws).await
}

/// Answers with the length of every request header its handler can read, `name=len` lines.
#[ws_route("/headers")]
async fn headers(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await?;
    let lengths: Vec<String> = ws
        .headers()
        .iter()
        .map(|(name, value)| format!("{name}={}", value.len()))
        .collect();
    ws.send_text(lengths.join("\n")).await?;
    while ws.receive().await?.is_some() {}
    Ok(())
}

/// `KIND LEN COUNT` (`KIND` `t` text, `b` binary, `g` JSON strings to a group of which this
/// connection is the one member, `m` the same with one text `direct` of its own after the
/// first half): sends COUNT messages of LEN bytes each, message `k` byte `i`
/// being [`pattern`]`(k, i)`.
#[ws_route("/sizes")]
async fn sizes(mut ws: WebSocket, app: App) -> Result<(), WsError> {
    ws.accept().await?;
    let group = format!("sizes_{}", ws.id().as_uuid().simple());
    app.channels()
        .add_channel_to_group(&ws.channel(), &group)
        .await?;
    while let Some(request) = ws.receive_text().await? {
        let fields: Vec<&str> = request.split(' ').collect();
        let [kind, len, count] = fields.as_slice() else {
            return Err(WsError::close(4400, "KIND LEN COUNT"));
        };
        let (Ok(len), Ok(count)) = (len.parse::<usize>(), count.parse::<usize>()) else {
            return Err(WsError::close(4400, "LEN and COUNT are numbers"));
        };
        for k in 0..count {
            let bytes: Vec<u8> = (0..len).map(|i| pattern(k, i)).collect();
            if *kind == "b" {
                ws.send_bytes(bytes).await?;
            } else if *kind == "g" {
                let text = String::from_utf8(bytes).unwrap();
                app.channels().group_send(&group, &text).await?;
            } else if *kind == "m" {
                // The group's COUNT messages, with one of the connection's own after the
                // first half.
                let text = String::from_utf8(bytes).unwrap();
                app.channels().group_send(&group, &text).await?;
                if k + 1 == count / 2 {
                    ws.send_text("direct").await?;
                }
            } else {
                ws.send_text(String::from_utf8(bytes).unwrap()).await?;
            }
        }
    }
    Ok(())
}

fn pattern(k: usize, i: usize) -> u8 {
    b'a' + ((k + i) % 26) as u8
}

fn builder() -> switchboard::Builder {
    App::builder()
        .only_module(module_path!())
        .max_message_size(1024)
}

async fn server() -> TestServer {
    TestServer::start(builder().build().unwrap()).await
}

// --- a raw client -------------------------------------------------------------------------

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A frame as a client sends it: FIN set, masked.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    Frame::new(opcode, payload).encode()
}

/// A frame with every field chosen.
struct Frame<'a> {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    payload: &'a [u8],
}

impl<'a> Frame<'a> {
    fn new(opcode: u8, payload: &'a [u8]) -> Self {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            masked: true,
            payload,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![(u8::from(self.fin) << 7) | (self.rsv << 4) | self.opcode];
        let mask_bit = if self.masked { 0x80 } else { 0 };
        let len = self.payload.len();
        if len < 126 {
            out.push(mask_bit | len as u8);
        } else if len <= 0xFFFF {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let key = [0x37, 0xfa, 0x21, 0x3d];
        if self.masked {
            out.extend_from_slice(&key);
            out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(self.payload);
        }
        out
    }
}

/// A frame from the server.
#[derive(Debug, PartialEq, Eq)]
struct Received {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

impl Received {
    fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Reads one frame, as the server sends it (never masked).
async fn read_frame(tcp: &mut (impl AsyncRead + Unpin)) -> Option<Received> {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await.ok()?;
    assert_eq!(head[1] & 0x80, 0, "a server frame is never masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            tcp.read_exact(&mut n).await.ok()?;
            u64::from(u16::from_be_bytes(n))
        }
        127 => {
            let mut n = [0u8; 8];
            tcp.read_exact(&mut n).await.ok()?;
            u64::from_be_bytes(n)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).unwrap()];
    tcp.read_exact(&mut payload).await.ok()?;
    Some(Received {
        fin: head[0] & 0x80 != 0,
        opcode: head[0] & 0x0f,
        payload,
    })
}

/// A connection after its upgrade.
struct Raw {
    tcp: TcpStream,
}

impl Raw {
    async fn connect(addr: SocketAddr, path: &str) -> Raw {
        let request = upgrade_request(path, &[]);
        let (status, _, tcp) = handshake(addr, &request).await;
        assert_eq!(status, 101, "the upgrade of {path}");
        Raw { tcp }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    async fn next(&mut self) -> Option<Received> {
        tokio::time::timeout(WAIT, read_frame(&mut self.tcp))
            .await
            .expect("a frame or the end of the connection in time")
    }

    /// The server's close code; then the server ends the TCP connection.
    async fn expect_close(&mut self) -> u16 {
        let frame = self.next().await.expect("a close frame");
        let code = frame.close_code();
        assert!(code.is_some(), "expected a close frame, got {frame:?}");
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(WAIT, self.tcp.read_to_end(&mut rest)).await;
        assert!(
            ended.is_ok(),
            "the server ends the connection after its close frame"
        );
        code.unwrap()
    }
}

fn upgrade_request(path: &str, extra: &[(&str, &str)]) -> String {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// Sends `request`; the status and head of the response, and the connection.
async fn handshake(addr: SocketAddr, request: &str) -> (u16, String, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(WAIT, tcp.read(&mut byte)).await;
        match read.expect("a response in time") {
            Ok(1) => head.push(byte[0]),
            _ => panic!("the connection ended before the response head: {head:?}"),
        }
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, tcp)
}

/// The case's frames on a fresh connection to `/echo`: the close code the server answers.
async fn close_code_for(server: &TestServer, frames: &[Vec<u8>]) -> u16 {
    let mut raw = Raw::connect(server.addr(), "/echo").await;
    for frame in frames {
        raw.send(frame).await;
    }
    raw.expect_close().await
}

// --- framing ----------------------------------------------------------------------------

#[tokio::test]
async fn fragmented_messages_with_pings_between_their_fragments_arrive_whole() {
    let server = server().await;
    let mut raw = Raw::connect(server.addr(), "/echo").await;
    let start = Frame {
        fin: false,
        ..Frame::new(TEXT, b"Hel")
    };
    let middle = Frame {
        fin: false,
        ..Frame::new(CONTINUATION, "lo, wö".as_bytes())
    };
    raw.send(&start.encode()).await;
    raw.send(&frame(PING, b"between")).await;
    raw.send(&middle.encode()).await;
    raw.send(&frame(PING, b"again")).await;
    raw.send(&frame(CONTINUATION, "rld".as_bytes())).await;
    let mut pongs = Vec::new();
    let echoed = loop {
        let frame = raw.next().await.expect("a frame");
        match frame.opcode {
            PONG => pongs.push(frame.payload),
            TEXT => break frame,
            other => panic!("unexpected opcode {other}"),
        }
    };
    assert!(echoed.fin);
    assert_eq!(echoed.payload, "Hello, wörld".as_bytes());
    assert_eq!(pongs, [b"between".to_vec(), b"again".to_vec()]);
    raw.send(&frame(CLOSE, &1000u16.to_be_bytes())).await;
    assert_eq!(raw.expect_close().await, 1000);
    server.shutdown().await;
}

/// Checks that `frame` is message `k` of a `/sizes` request for `len` bytes of `opcode`.
fn assert_sized(frame: &Received, opcode: u8, len: usize, k: usize) {
    assert!(frame.fin, "a whole message per frame");
    assert_eq!(frame.opcode, opcode, "the opcode of a {len}-byte message");
    assert_eq!(frame.payload.len(), len, "the length of message {k}");
    let expected: Vec<u8> = (0..len).map(|i| pattern(k, i)).collect();
    assert!(
        frame.payload == expected,
        "message {k} of {len} bytes arrives intact"
    );
}

#[tokio::test]
async fn server_frames_carry_every_length_in_the_right_header_form() {
    let server = server().await;
    let mut raw = Raw::connect(server.addr(), "/sizes").await;
    // Each side of the 7-bit, 16-bit and 64-bit length forms (RFC 6455 5.2).
    for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
        for (kind, opcode) in [("t", TEXT), ("b", BINARY)] {
            raw.send(&frame(TEXT, format!("{kind} {len} 2").as_bytes()))
                .await;
            for k in 0..2 {
                let frame = raw.next().await.expect("a frame");
                assert_sized(&frame, opcode, len, k);
            }
        }
    }
    raw.send(&frame(CLOSE, &1000u16.to_be_bytes())).await;
    assert_eq!(raw.expect_close().await, 1000);
    server.shutdown().await;
}

/// Client messages of each length around the read buffer's (512 bytes), the thread's buffer
/// the connection is read through (16 KiB) and the header forms, message `k` byte `i` being
/// [`pattern`]`(k, i)`.
const CLIENT_LENGTHS: [usize; 20] = [
    0, 1, 13, 14, 15, 125, 126, 127, 500, 511, 512, 513, 1_000, 4_096, 16_369, 16_383, 16_384,
    16_385, 40_000, 65_536,
];

/// Sends every message of [`CLIENT_LENGTHS`] to `/echo` as `pieces` cuts them (byte counts,
/// cycled) while reading the echoes: each comes back whole and in order.
async fn client_lengths_echoed(pieces: &[usize], read_buffer: usize) {
    let app = builder()
        .max_message_size(70_000)
        .read_buffer_size(read_buffer)
        .build()
        .unwrap();
    let server = TestServer::start(app).await;
    let raw = Raw::connect(server.addr(), "/echo").await;
    raw.tcp.set_nodelay(true).unwrap();
    let (mut read, mut write) = raw.tcp.into_split();
    let mut burst = Vec::new();
    for (k, len) in CLIENT_LENGTHS.into_iter().enumerate() {
        let payload: Vec<u8> = (0..len).map(|i| pattern(k, i)).collect();
        burst.extend(frame(BINARY, &payload));
    }
    let pieces = pieces.to_vec();
    let writer = tokio::spawn(async move {
        let mut at = 0;
        for piece in pieces.iter().cycle() {
            if at == burst.len() {
                break;
            }
            let end = at.saturating_add(*piece).min(burst.len());
            write.write_all(&burst[at..end]).await.unwrap();
            at = end;
            if *piece < 8 {
                // Give the server the chance to read the cut-off piece on its own.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        write
    });
    for (k, len) in CLIENT_LENGTHS.into_iter().enumerate() {
        let frame = tokio::time::timeout(WAIT, read_frame(&mut read))
            .await
            .expect("an echo in time")
            .expect("an echo");
        assert_sized(&frame, BINARY, len, k);
    }
    let mut write = writer.await.unwrap();
    write
        .write_all(&frame(CLOSE, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    let close = read_frame(&mut read).await.expect("the close frame");
    assert_eq!(close.close_code(), Some(1000));
    server.shutdown().await;
}

#[tokio::test]
async fn client_messages_of_every_length_arrive_whole_and_in_order_from_one_write() {
    client_lengths_echoed(&[usize::MAX], 512).await;
}

#[tokio::test]
async fn client_messages_of_every_length_arrive_whole_and_in_order_with_a_large_read_buffer() {
    // tungstenite asks for 32 KiB at a time: the transport reads into its buffer directly.
    client_lengths_echoed(&[usize::MAX], 32 * 1024).await;
    client_lengths_echoed(&[1, 1, 1, 7, 100, 3_001, 1, 9_000, 2, 20_000], 32 * 1024).await;
}

#[tokio::test]
async fn client_messages_of_every_length_arrive_whole_and_in_order_in_ragged_pieces() {
    // Headers and payloads cut at every kind of place, a byte at a time among them.
    client_lengths_echoed(&[1, 1, 1, 7, 100, 3_001, 1, 9_000, 2, 20_000], 512).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pongs_go_between_data_frames_never_inside_one_while_the_client_is_behind() {
    // 16 MiB of the connection's own messages (the writer's batch), the client not reading at
    // first: the server's writes stop part-way through a frame, with the pongs of the pings
    // below waiting behind it.
    pongs_between_frames("t", 40_000, 420).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pongs_go_between_group_frames_never_inside_one_while_the_client_is_behind() {
    // The same through a group (the writer reads the ring in place), the queue's bound
    // raised above the 16 MiB.
    pongs_between_frames("g", 40_000, 420).await;
}

#[tokio::test]
async fn a_message_of_its_own_keeps_its_place_among_a_groups_past_the_writers_budget() {
    let server = server().await;
    let mut raw = Raw::connect(server.addr(), "/sizes").await;
    // 200 KB of group messages, past what a writer takes from a ring at once (64 KiB), the
    // connection's own message sent after the 10th.
    let (len, count) = (10_000, 20);
    raw.send(&frame(TEXT, format!("m {len} {count}").as_bytes()))
        .await;
    let mut order = Vec::new();
    for _ in 0..=count {
        let frame = raw.next().await.expect("a frame");
        if frame.payload == b"direct" {
            order.push("direct".to_owned());
        } else {
            assert_eq!(frame.payload.len(), len + 2);
            order.push(format!("{}", frame.payload[1] - b'a'));
        }
    }
    // Message k starts with pattern(k, 0): its index modulo 26.
    let mut expected: Vec<String> = (0..count).map(|k| format!("{}", k % 26)).collect();
    expected.insert(count / 2, "direct".to_owned());
    assert_eq!(
        order, expected,
        "the connection's own message in the order it was sent"
    );
    raw.send(&frame(CLOSE, &1000u16.to_be_bytes())).await;
    assert_eq!(raw.expect_close().await, 1000);
    server.shutdown().await;
}

async fn pongs_between_frames(kind: &str, len: usize, count: usize) {
    let app = builder()
        .outbound_queue_bytes(64 * 1024 * 1024)
        .build()
        .unwrap();
    let server = TestServer::start(app).await;
    let raw = Raw::connect(server.addr(), "/sizes").await;
    let (mut read, mut write) = raw.tcp.into_split();
    write
        .write_all(&frame(TEXT, format!("{kind} {len} {count}").as_bytes()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pings: Vec<Vec<u8>> = (0..10).map(|i| format!("ping {i}").into_bytes()).collect();
    for ping in &pings {
        write.write_all(&frame(PING, ping)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut pongs = Vec::new();
    let mut k = 0;
    while k < count || pongs.len() < pings.len() {
        let frame = tokio::time::timeout(WAIT, read_frame(&mut read))
            .await
            .expect("frames in time")
            .expect("the connection is open");
        match frame.opcode {
            PONG => pongs.push(frame.payload),
            _ if kind == "g" => {
                // A JSON string: the pattern between quotes.
                let inner = Received {
                    fin: frame.fin,
                    opcode: frame.opcode,
                    payload: frame.payload[1..frame.payload.len() - 1].to_vec(),
                };
                assert_eq!(frame.payload.len(), len + 2, "message {k} with its quotes");
                assert_sized(&inner, TEXT, len, k);
                k += 1;
            }
            _ => {
                assert_sized(&frame, TEXT, len, k);
                k += 1;
            }
        }
    }
    // tungstenite answers two pings read before a flush with one pong (the later one).
    assert!(!pongs.is_empty() && pongs.len() <= pings.len(), "{pongs:?}");
    assert!(pongs.iter().all(|pong| pings.contains(pong)), "{pongs:?}");
    assert_eq!(pongs.last(), pings.last(), "the last ping is answered");
    drop(write);
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007_also_when_split_across_fragments() {
    let server = server().await;
    let whole = frame(TEXT, b"ok \xff\xfe");
    assert_eq!(close_code_for(&server, &[whole]).await, 1007);
    // A valid start of a four-byte sequence, then a byte that cannot continue it.
    let start = Frame {
        fin: false,
        ..Frame::new(TEXT, b"hello \xf0\x9f")
    }
    .encode();
    let end = frame(CONTINUATION, b"\x28\x8c");
    assert_eq!(close_code_for(&server, &[start, end]).await, 1007);
    server.shutdown().await;
}

#[tokio::test]
async fn protocol_violations_close_with_1002() {
    let server = server().await;
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "an unmasked frame",
            vec![
                Frame {
                    masked: false,
                    ..Frame::new(TEXT, b"hi")
                }
                .encode(),
            ],
        ),
        (
            "RSV1 without an extension",
            vec![
                Frame {
                    rsv: 0b100,
                    ..Frame::new(TEXT, b"hi")
                }
                .encode(),
            ],
        ),
        (
            "RSV3",
            vec![
                Frame {
                    rsv: 0b001,
                    ..Frame::new(BINARY, b"hi")
                }
                .encode(),
            ],
        ),
        ("a ping over 125 bytes", vec![frame(PING, &[b'p'; 126])]),
        (
            "a fragmented ping",
            vec![
                Frame {
                    fin: false,
                    ..Frame::new(PING, b"p")
                }
                .encode(),
            ],
        ),
        ("opcode 3 (reserved)", vec![frame(0x3, b"x")]),
        ("opcode 0xB (reserved control)", vec![frame(0xB, b"")]),
        (
            "a continuation without a start",
            vec![frame(CONTINUATION, b"orphan")],
        ),
        (
            "a new message inside a fragmented one",
            vec![
                Frame {
                    fin: false,
                    ..Frame::new(TEXT, b"one")
                }
                .encode(),
                frame(TEXT, b"two"),
            ],
        ),
        (
            "a close frame with a one-byte body",
            vec![frame(CLOSE, b"\x03")],
        ),
    ];
    for (case, frames) in cases {
        assert_eq!(close_code_for(&server, &frames).await, 1002, "{case}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn close_codes_a_client_may_not_send_are_protocol_errors() {
    let server = server().await;
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let close = frame(CLOSE, &code.to_be_bytes());
        assert_eq!(close_code_for(&server, &[close]).await, 1002, "code {code}");
    }
    // Valid codes are echoed back.
    for code in [1000u16, 1001, 1003, 1011, 3000, 4999] {
        let close = frame(CLOSE, &code.to_be_bytes());
        assert_eq!(close_code_for(&server, &[close]).await, code, "code {code}");
    }
    // A close reason that is not UTF-8.
    let mut body = 1000u16.to_be_bytes().to_vec();
    body.extend_from_slice(b"bye \xff");
    let code = close_code_for(&server, &[frame(CLOSE, &body)]).await;
    assert!(code == 1007 || code == 1002, "invalid close reason: {code}");
    server.shutdown().await;
}

#[tokio::test]
async fn length_claims_past_the_limit_close_at_once_without_waiting_for_the_bytes() {
    let server = server().await;
    // The header alone: a 2^62-byte frame, and a 2^16-byte one (the limit here is 1 KiB).
    for claim in [1u64 << 62, 1 << 16] {
        let mut head = vec![0x80 | BINARY, 0x80 | 127];
        head.extend_from_slice(&claim.to_be_bytes());
        head.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            close_code_for(&server, &[head]).await,
            1009,
            "claim {claim}"
        );
    }
    // The most significant bit of a 64-bit length must be 0 (RFC 6455 5.2).
    let mut head = vec![0x80 | BINARY, 0x80 | 127];
    head.extend_from_slice(&(1u64 << 63).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    let code = close_code_for(&server, &[head]).await;
    assert!(code == 1002 || code == 1009, "MSB set: {code}");
    // Fragments that add up past the limit.
    let first = Frame {
        fin: false,
        ..Frame::new(BINARY, &[0u8; 600])
    }
    .encode();
    let second = frame(CONTINUATION, &[0u8; 600]);
    assert_eq!(close_code_for(&server, &[first, second]).await, 1009);
    server.shutdown().await;
}

// --- the upgrade request ----------------------------------------------------------------

#[tokio::test]
async fn a_wrong_version_gets_426_naming_13_and_a_missing_key_400() {
    let server = server().await;
    let request = upgrade_request("/echo", &[])
        .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let (status, head, _) = handshake(server.addr(), &request).await;
    assert_eq!(status, 426, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-version: 13\r\n"),
        "{head}"
    );
    let request = upgrade_request("/echo", &[])
        .replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    let (status, head, _) = handshake(server.addr(), &request).await;
    assert_eq!(status, 400, "{head}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_head_over_the_limit_gets_431_before_any_handler() {
    let app = builder().build().unwrap();
    let server = TestServer::start(app.clone()).await;
    let big = "v".repeat(64 * 1024);
    let request = upgrade_request("/counted-headers", &[("x-big", &big)]);
    let (status, head, _) = handshake(server.addr(), &request).await;
    assert_eq!(status, 431, "{head}");
    // Headers count together: 50 of 400 bytes each (fewer than hyper's 100 headers).
    let many: Vec<(String, String)> = (0..50)
        .map(|n| (format!("x-h{n}"), "v".repeat(400)))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (&n[..], &v[..])).collect();
    let (status, _, _) =
        handshake(server.addr(), &upgrade_request("/counted-headers", &many)).await;
    assert_eq!(status, 431);
    // Under the default 16 KiB: accepted, and every header reaches the handler.
    let fits = "v".repeat(12 * 1024);
    let request = upgrade_request("/counted-headers", &[("x-fits", &fits)]);
    let (status, _, tcp) = handshake(server.addr(), &request).await;
    assert_eq!(status, 101);
    let mut raw = Raw { tcp };
    let lengths = String::from_utf8(raw.next().await.unwrap().payload).unwrap();
    assert!(lengths.contains("x-fits=12288"), "{lengths}");
    assert_eq!(
        HEADERS_HANDLED.load(Ordering::SeqCst),
        1,
        "no handler ran for the refused ones"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_of_your_own_gets_the_same_bound_on_websocket_routes() {
    use switchboard::axum;
    let (router, shutdown) = builder()
        .max_request_head(4 * 1024)
        .build()
        .unwrap()
        .into_router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    let big = "v".repeat(8 * 1024);
    let request = upgrade_request("/headers", &[("x-big", &big)]);
    let (status, head, _) = handshake(addr, &request).await;
    assert_eq!(status, 431, "{head}");
    let (status, _, _) = handshake(addr, &upgrade_request("/headers", &[])).await;
    assert_eq!(status, 101);
    shutdown.trigger();
    served.abort();
}

#[tokio::test]
async fn header_values_over_64_kib_reach_the_handler_whole_when_the_limit_allows_them() {
    let app = builder().max_request_head(512 * 1024).build().unwrap();
    let server = TestServer::start(app).await;
    let long = "v".repeat(70_000);
    let longer = "w".repeat(200_000);
    let request = upgrade_request("/headers", &[("x-long", &long), ("x-longer", &longer)]);
    let (status, _, tcp) = handshake(server.addr(), &request).await;
    assert_eq!(status, 101);
    let mut raw = Raw { tcp };
    let lengths = String::from_utf8(raw.next().await.unwrap().payload).unwrap();
    assert!(lengths.contains("x-long=70000"), "{lengths}");
    assert!(lengths.contains("x-longer=200000"), "{lengths}");
    server.shutdown().await;
}

// --- a client that pings and never reads ---------------------------------------------------

/// A ping with the largest payload a control frame may carry, and 64 of them in a row.
fn ping_burst() -> (Vec<u8>, Vec<u8>) {
    let ping = frame(PING, &[b'p'; 125]);
    let burst = ping.iter().copied().cycle().take(ping.len() * 64).collect();
    (ping, burst)
}

/// Sends bursts of pings until a write blocks for 2 s or fails (`true`) or, without a bound on
/// the server, well past what the kernel's buffers absorb (`false`); and how many bytes it sent.
async fn flood_until_blocked(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    burst: &[u8],
) -> (bool, usize) {
    const GIVE_UP: usize = 128 * 1024 * 1024;
    let mut sent = 0;
    loop {
        // One write at a time, so that a write cut short by the timeout is resumed where it
        // stopped.
        let at = sent % burst.len();
        match tokio::time::timeout(Duration::from_secs(2), write.write(&burst[at..])).await {
            Ok(Ok(written)) => {
                sent += written;
                if sent >= GIVE_UP {
                    return (false, sent);
                }
            }
            // Blocked, or ended by the server.
            Ok(Err(_)) | Err(_) => return (true, sent),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_without_reading_is_pushed_back_and_the_pongs_held_stay_bounded() {
    let app = builder().build().unwrap();
    let server = TestServer::start(app.clone()).await;
    let raw = Raw::connect(server.addr(), "/echo").await;
    raw.tcp.set_nodelay(true).unwrap();
    let (mut read, mut write) = raw.tcp.into_split();
    let (ping, burst) = ping_burst();
    let (blocked, sent) = flood_until_blocked(&mut write, &burst).await;
    let metrics = app.connection_metrics();
    assert!(
        blocked,
        "the client sent {} MiB of pings without being pushed back",
        sent >> 20
    );
    assert!(metrics.pong_backlog_pauses >= 1, "{metrics:?}");
    // Once the client reads, it gets its pongs, the server reads the rest, and the connection
    // still works.
    let reader = tokio::spawn(async move {
        let mut pongs = 0usize;
        loop {
            let frame = read_frame(&mut read).await.expect("the connection is open");
            match frame.opcode {
                PONG => pongs += 1,
                TEXT => return (pongs, frame.payload),
                _ => panic!("unexpected {frame:?} after {pongs} pongs"),
            }
        }
    });
    // The rest of the last burst, and a message.
    let rest = burst.len() - sent % burst.len();
    write.write_all(&burst[burst.len() - rest..]).await.unwrap();
    write.write_all(&frame(TEXT, b"still here")).await.unwrap();
    let (pongs, echoed) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the echo in time")
        .unwrap();
    assert_eq!(echoed, b"still here");
    assert!(pongs > 0);
    // tungstenite may answer two pings read before a flush with one pong, never with more.
    let pings = (sent + rest) / ping.len();
    assert!(pongs <= pings, "{pongs} pongs for {pings} pings");
    drop(write);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_takes_its_pongs_is_closed_after_the_pong_timeout() {
    let app = builder()
        .pong_timeout(Duration::from_millis(500))
        .close_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;
    let raw = Raw::connect(server.addr(), "/echo").await;
    let (_read, mut write) = raw.tcp.into_split();
    let (_, burst) = ping_burst();
    let (blocked, _) = flood_until_blocked(&mut write, &burst).await;
    assert!(blocked, "the client was pushed back");
    eventually("the connection is closed", || app.connection_count() == 0).await;
    let metrics = app.connection_metrics();
    assert_eq!(metrics.pong_backlog_closes, 1, "{metrics:?}");
    server.shutdown().await;
}
