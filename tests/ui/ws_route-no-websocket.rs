use switchboard::prelude::*;

#[ws_route("/chat/{room}")]
async fn handler(room: String) {
    let _ = room;
}

fn main() {}
