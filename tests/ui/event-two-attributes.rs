use switchboard::prelude::*;

#[derive(Event, Clone, serde::Serialize)]
#[event("room.message")]
#[event("room.sent")]
struct RoomMessage;

fn main() {}
