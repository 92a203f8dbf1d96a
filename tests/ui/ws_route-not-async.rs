use switchboard::prelude::*;

#[ws_route("/chat")]
fn handler(ws: WebSocket) {
    let _ = ws;
}

fn main() {}
