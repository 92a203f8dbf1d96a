use serde::Serialize;
use switchboard::prelude::*;

#[derive(Event, Clone, Serialize)]
#[event("room.joined")]
struct Joined;

#[derive(Event, Clone, Serialize)]
#[event("room.left")]
struct Left;

// The payload is an event type, but another one.
#[on(Joined)]
async fn listener(_left: Left) {}

fn main() {}
