use switchboard::prelude::*;

struct RoomMessage;

#[on(RoomMessage)]
async fn listener() {}

fn main() {}
