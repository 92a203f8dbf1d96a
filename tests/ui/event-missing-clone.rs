use switchboard::prelude::*;

#[derive(Event, serde::Serialize)]
#[event("room.message")]
struct RoomMessage;

fn main() {}
