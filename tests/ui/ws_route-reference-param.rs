use switchboard::prelude::*;

#[ws_route("/chat/{room}")]
async fn handler(mut ws: WebSocket, room: &str) -> Result<(), WsError> {
    let _ = room;
    ws.accept().await
}

fn main() {}
