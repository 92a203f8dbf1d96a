use switchboard::prelude::*;

#[on("room message")]
async fn listener() {}

fn main() {}
