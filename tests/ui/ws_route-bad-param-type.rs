use switchboard::prelude::*;

#[ws_route("/items/{id}")]
async fn handler(mut ws: WebSocket, id: Vec<u8>) -> Result<(), WsError> {
    let _ = id;
    ws.accept().await
}

fn main() {}
