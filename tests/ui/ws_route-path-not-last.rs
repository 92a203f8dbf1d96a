use switchboard::prelude::*;

#[ws_route("/files/{rest:path}/meta")]
async fn handler(mut ws: WebSocket, rest: String) -> Result<(), WsError> {
    let _ = rest;
    ws.accept().await
}

fn main() {}
