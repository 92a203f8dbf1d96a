use switchboard::prelude::*;

#[ws_route("/chat")]
async fn handler<S: Send>(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await
}

fn main() {}
