use switchboard::prelude::*;

#[ws_route("/chat")]
async fn handler(mut ws: WebSocket, other: WebSocket) -> Result<(), WsError> {
    let _ = other;
    ws.accept().await
}

fn main() {}
