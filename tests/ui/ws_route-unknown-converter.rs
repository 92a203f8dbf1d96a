use switchboard::prelude::*;

#[ws_route("/items/{id:number}")]
async fn handler(mut ws: WebSocket, id: u64) -> Result<(), WsError> {
    let _ = id;
    ws.accept().await
}

fn main() {}
