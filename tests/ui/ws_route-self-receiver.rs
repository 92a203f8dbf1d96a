use switchboard::prelude::*;

struct Chat;

impl Chat {
    #[ws_route("/chat")]
    async fn handler(&self, mut ws: WebSocket) -> Result<(), WsError> {
        ws.accept().await
    }
}

fn main() {}
