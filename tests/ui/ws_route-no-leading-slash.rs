use switchboard::prelude::*;

#[ws_route("chat/{room}")]
async fn handler(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await
}

fn main() {}
