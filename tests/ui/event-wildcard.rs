use switchboard::prelude::*;

#[derive(Event, Clone, serde::Serialize)]
#[event("room.*")]
struct RoomMessage;

fn main() {}
