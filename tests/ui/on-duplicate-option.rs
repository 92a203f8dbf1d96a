use switchboard::prelude::*;

#[on("room.message", priority = high, priority = low)]
async fn listener() {}

fn main() {}
