use switchboard::prelude::*;

#[ws_route]
async fn handler(mut ws: WebSocket) -> Result<(), WsError> {
    ws.accept().await
}

fn main() {}
