use switchboard::prelude::*;

#[ws_route("/chat")]
async fn handler(mut ws: WebSocket) -> u32 {
    let _ = ws.accept().await;
    7
}

fn main() {}
