use switchboard::prelude::*;

#[derive(Event, Clone, serde::Serialize)]
#[event("")]
struct RoomMessage;

fn main() {}
