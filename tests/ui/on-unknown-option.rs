use switchboard::prelude::*;

#[on("room.message", colour = "red")]
async fn listener() {}

fn main() {}
