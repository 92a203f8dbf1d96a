use switchboard::prelude::*;

#[on("room.message", priority = urgent)]
async fn listener() {}

fn main() {}
