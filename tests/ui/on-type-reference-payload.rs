use serde::Serialize;
use switchboard::prelude::*;

#[derive(Event, Clone, Serialize)]
#[event("room.message")]
struct RoomMessage;

// A listener owns its payload: a reference is not the event's type.
#[on(RoomMessage)]
fn listener(_msg: Option<RoomMessage>) {}

fn main() {}
