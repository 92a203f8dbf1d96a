use serde::{Deserialize, Serialize};
use switchboard::prelude::*;

#[derive(Event, Clone, Serialize, Deserialize)]
#[event("room.message")]
struct RoomMessage {
    text: String,
}

// A typed listener takes the event's own type: `Value` is for listeners named by string.
#[on(RoomMessage)]
fn listener(_msg: Value) {}

fn main() {}
