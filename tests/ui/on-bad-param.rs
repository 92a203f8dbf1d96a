use switchboard::prelude::*;

#[on("room.message")]
async fn listener(_file: std::fs::File) {}

fn main() {}
