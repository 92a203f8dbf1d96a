use switchboard::prelude::*;

#[derive(Event, Clone, serde::Serialize)]
#[event("room.message", priority = high)]
struct RoomMessage;

fn main() {}
