use switchboard::prelude::*;

#[on("room.message")]
struct Listener;

fn main() {}
