use switchboard::prelude::*;

#[derive(Event, Clone, serde::Serialize)]
#[event(namespace = "chat")]
struct RoomMessage;

fn main() {}
