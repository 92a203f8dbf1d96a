use switchboard::prelude::*;

#[ws_route("/chat/{room}")]
async fn handler(mut ws: WebSocket, roomname: String) -> Result<(), WsError> {
    let _ = roomname;
    ws.accept().await
}

fn main() {}
