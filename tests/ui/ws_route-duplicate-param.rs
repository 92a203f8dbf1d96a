use switchboard::prelude::*;

#[ws_route("/rooms/{id}/members/{id}")]
async fn handler(mut ws: WebSocket, id: String) -> Result<(), WsError> {
    let _ = id;
    ws.accept().await
}

fn main() {}
