use switchboard::prelude::*;

// A type, but not an event type: it does not derive `Event`.
#[derive(Clone, serde::Serialize)]
struct RoomMessage;

#[on(RoomMessage)]
async fn listener(_msg: RoomMessage) {}

fn main() {}
