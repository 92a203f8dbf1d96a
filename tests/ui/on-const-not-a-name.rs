use switchboard::prelude::*;

const ROOM_NUMBER: u32 = 7;

#[on(ROOM_NUMBER)]
async fn listener() {}

fn main() {}
