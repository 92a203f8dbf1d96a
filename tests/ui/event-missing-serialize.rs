use switchboard::prelude::*;

#[derive(Event, Clone)]
#[event("room.message")]
struct RoomMessage;

fn main() {}
