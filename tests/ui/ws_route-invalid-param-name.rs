use switchboard::prelude::*;

#[ws_route("/chat/{1room}")]
async fn handler(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await
}

fn main() {}
