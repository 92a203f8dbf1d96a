use switchboard::prelude::*;

const ROOM_MESSAGE: &str = "room message";

#[on(ROOM_MESSAGE)]
async fn listener() {}

fn main() {}
