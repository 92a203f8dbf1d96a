use serde::{Deserialize, Serialize};
use switchboard::prelude::*;

#[derive(Event, Clone, Serialize, Deserialize)]
#[event("room.message")]
struct RoomMessage {
    text: String,
}

#[derive(Clone, Serialize, Deserialize)]
struct Other {
    text: String,
}

#[on(RoomMessage)]
async fn listener(_app: App, _msg: Other) {}

fn main() {}
