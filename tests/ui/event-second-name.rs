use switchboard::prelude::*;

#[derive(Event, Clone, serde::Serialize)]
#[event("room.message", "room.sent")]
struct RoomMessage;

fn main() {}
