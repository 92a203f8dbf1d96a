use serde::Serialize;
use switchboard::prelude::*;

// A hand-written `Event` impl is held to the derive's rules: one exact name.
#[derive(Clone, Serialize)]
struct AnyRoom;

impl Event for AnyRoom {
    const NAME: &'static str = "room.*";
}

#[on(AnyRoom)]
fn listener(_msg: AnyRoom) {}

fn main() {}
