use switchboard::prelude::*;

#[derive(Event, Clone, serde::Serialize)]
#[event("message", namespace = "chat.*")]
struct RoomMessage;

fn main() {}
