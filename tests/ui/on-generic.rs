use switchboard::prelude::*;

#[on("room.message")]
async fn listener<T>(_payload: T) {}

fn main() {}
