use switchboard::prelude::*;

#[derive(Event, Clone, serde::Serialize)]
struct RoomMessage;

fn main() {}
