use switchboard::prelude::*;

#[derive(Event, Clone, serde::Serialize)]
#[event(room.message)]
struct RoomMessage;

fn main() {}
